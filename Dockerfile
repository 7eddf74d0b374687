# One image for the worker and the ingest service (see docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY mailstream ./mailstream
COPY connectors ./connectors
COPY streams ./streams
COPY schemas ./schemas
RUN pip install --no-cache-dir .
ENV MAILSTREAM_DATA_DIR=/var/lib/mailstream
USER nobody
ENTRYPOINT ["mailstream"]
