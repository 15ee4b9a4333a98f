# The recommender service's image: `python -m tasks.serve` (docker-compose.yaml's `recommender`).
# Slim on purpose: MLflow's client (mlflow-skinny), numpy, pyarrow, faiss and the HTTP server, pinned in
# requirements-serve.txt; no torch, Airflow or pandas. The service imports only pinsage/ and tasks/.
#   docker build -f docker/recommender.Dockerfile -t pinsage-recommender .   (from the repository root)
FROM python:3.11-slim

ENV PINSAGE_HOME=/opt/pinsage \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The service runs as an unprivileged account (with a home directory for the libraries' caches).
RUN useradd --create-home --home-dir /home/pinsage --uid 10001 --shell /usr/sbin/nologin pinsage

WORKDIR /opt/pinsage
COPY requirements-serve.txt constraints.txt /opt/pinsage/
RUN pip install --no-cache-dir -r /opt/pinsage/requirements-serve.txt -c /opt/pinsage/constraints.txt

COPY pinsage /opt/pinsage/pinsage
COPY tasks /opt/pinsage/tasks
COPY pyproject.toml README.md /opt/pinsage/
# pinsage and tasks as a package, without the library's training dependencies (the answer path needs none)
RUN pip install --no-cache-dir --no-deps -e /opt/pinsage

USER pinsage
EXPOSE 8000
CMD ["python", "-m", "tasks.serve", "--model", "models:/pinsage@champion", "--host", "0.0.0.0", "--port", "8000"]
