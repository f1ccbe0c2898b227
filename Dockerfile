# The worker image of docker-compose.yml: this package with PostgreSQL support.
# No password or storage URL is baked in; docker-compose.yml passes them.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch comes first, from PyTorch's CPU index: a plain "pip install torch" on
# Linux pulls the CUDA build and its libraries, several GB.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

WORKDIR /app
COPY pyproject.toml README.md ./
COPY search ./search
COPY studies ./studies
RUN pip install '.[postgresql,dashboard]'

RUN useradd --create-home --uid 1000 search
USER search

CMD ["python", "-m", "search", "--help"]
