# mammocad, CPU image: the REST API, the dashboard and the MLflow UI (see docker-compose.yml, docs/serving.md).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    MPLBACKEND=Agg

# OpenCV's headless wheel still needs libGL-free basics; libgomp for PyTorch/ONNX Runtime threads.
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends libgomp1 libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/* \
 && pip install --no-cache-dir "uv==0.13.9"

WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
# The locked versions, minus the CUDA runtime: torch/torchvision come as the same versions' CPU
# wheels from PyTorch's CPU index (torch==2.15.0 is satisfied by 2.15.0+cpu), ~1.5 GB smaller.
RUN uv export --frozen --no-dev --all-extras --no-hashes --no-emit-project -o /tmp/requirements.txt \
 && grep -v -E '^(nvidia-|triton|cuda-)' /tmp/requirements.txt > /tmp/requirements-cpu.txt \
 && uv pip install --system --index-strategy unsafe-best-match \
      --extra-index-url https://download.pytorch.org/whl/cpu -r /tmp/requirements-cpu.txt \
 && rm /tmp/requirements*.txt
COPY src ./src
RUN uv pip install --system --no-deps . \
 && useradd --create-home --uid 1000 mammocad
USER mammocad

# Run directories (and mlflow.db) are mounted here; nothing is baked into the image.
VOLUME ["/runs"]
EXPOSE 8000 8501 5000
CMD ["mammocad", "--help"]
