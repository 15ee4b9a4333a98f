"""PinSage: graph-convolutional item embeddings (Ying et al., KDD 2018, arXiv 1806.01973).

A plain library: numpy, pandas, pyarrow, scipy, numba, torch, faiss, gensim and Pillow; ray only for
the Ray engine (``engines``), starlette, uvicorn and orjson only for the recommender service
(``serve.http``). It never imports Airflow or MLflow; the pipeline steps in ``tasks/`` do the
orchestration and the logging.

Its groups only import downward (``tests/test_layering.py`` holds them to it):

    util                    atomic writes, progress, the CPU budget
    data                    the dataset contract, MovieLens adapters, the evaluation splits
    features, graph         word2vec + VGG16 inputs; the bipartite graph, random walks, neighbour tables
    model, eval             PinSageConv, PinSage, minibatches, cold twins, losses, training; metrics,
                            baselines and their tuning, bootstrap
    export                  the MapReduce export, embedding files, the faiss index and its answer table
    run                     PipelineConfig, the parameter table, RunDir (a run directory's layout)
    engines, serve          local or Ray; the answer path and its HTTP service, new items without retraining
    pipeline, validation, report, charts, cli, experiments, ddp
                            the stages, training's choices on validation pairs, the report page, the
                            command line
"""

__version__ = "0.1.0"
