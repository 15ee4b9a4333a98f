"""PinSage: graph-convolutional item embeddings (Ying et al., KDD 2018, arXiv 1806.01973).

A plain library: numpy, torch, pyarrow, faiss and gensim only. It never imports Airflow or MLflow;
the pipeline steps in ``tasks/`` do the orchestration and the logging.
"""

__version__ = "0.1.0"
