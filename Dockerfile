# CPU image: the service, its serving dependencies and the shipped models. No torch, no compilers,
# no pip caches, no ONNX backend test data (15 MB that onnx, which the worker uses to edit graphs, ships).
# Build: docker build -t cnn-serve .   (GPU image: Dockerfile.gpu)
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
RUN /opt/venv/bin/pip install --no-compile '.[serve]' \
 && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} + \
 && cd /opt/venv/lib/python3*/site-packages && rm -rf pip* setuptools* pkg_resources _distutils_hack distutils-precedence.pth \
    onnx/backend/test

FROM python:3.11-slim AS runtime
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
COPY models /models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    CNNSERVE_MODEL_DIR=/models CNNSERVE_HOST=0.0.0.0 CNNSERVE_PORT=8000
USER app
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python3", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status != 200)"]
CMD ["cnn-serve"]
