# The Airflow image of the project: Airflow 3 + the project's requirements + its code.
# Used by every Airflow service and by the MLflow tracking server in docker-compose.yaml.
FROM apache/airflow:3.3.2-python3.11

ARG PINSAGE_GIT_COMMIT=unknown
ENV PINSAGE_HOME=/opt/pinsage \
    PINSAGE_GIT_COMMIT=${PINSAGE_GIT_COMMIT} \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/pinsage/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False

USER root
# Directories that back named volumes: a fresh volume takes the image's ownership.
RUN mkdir -p /opt/pinsage/.pinsage/runs /mlflow/artifacts /mlflow/auth \
 && chown -R airflow:0 /opt/pinsage /mlflow
USER airflow

COPY --chown=airflow:0 requirements.txt constraints.txt /opt/pinsage/
# torch from the CPU wheel index first (PyPI's Linux wheel pulls gigabytes of CUDA libraries), then the
# rest, pinned; the constraint keeps pip from replacing that torch.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir -r /opt/pinsage/requirements.txt -c /opt/pinsage/constraints.txt

COPY --chown=airflow:0 pinsage /opt/pinsage/pinsage
COPY --chown=airflow:0 tasks /opt/pinsage/tasks
COPY --chown=airflow:0 dags /opt/pinsage/dags
COPY --chown=airflow:0 data /opt/pinsage/data
COPY --chown=airflow:0 pyproject.toml README.md /opt/pinsage/
# the project as a package (pinsage, tasks and the `pinsage` command), its dependencies pinned above
RUN pip install --no-cache-dir --no-deps --no-build-isolation -e /opt/pinsage
WORKDIR /opt/pinsage
