# The ML backend and the sync worker (one image, two commands; see docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY agile_modeling ./agile_modeling
COPY agile_cli ./agile_cli
COPY ml_backend ./ml_backend
COPY sync ./sync
COPY label_config ./label_config
# CPU wheels of torch: the MLP and pool scoring need no GPU
RUN pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu -c constraints.txt .
ENV AGILE_WORKSPACE=/workspace
VOLUME /workspace
EXPOSE 9090
CMD ["agile", "backend", "--bind", "0.0.0.0:9090"]
