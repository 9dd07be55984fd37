# Multi-stage build: wheels are built in the first stage, the runtime image has no compiler and runs as a
# non-root user. In a container, PostgreSQL and Redis are external (DATABASE_URL / REDIS_URL), so the image
# installs the package without its `embedded` and `replay` extras. The migrations ship inside the wheel.
FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir --upgrade pip
COPY pyproject.toml README.md ./
COPY dispatch ./dispatch
COPY geo ./geo
COPY websocket ./websocket
COPY migrations ./migrations
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    DISPATCH_HOST=0.0.0.0 DISPATCH_PORT=8080 DISPATCH_DATA_DIR=/var/lib/dispatch DISPATCH_DEMO=false
RUN useradd --system --create-home --uid 10001 dispatch \
    && mkdir -p /var/lib/dispatch && chown dispatch /var/lib/dispatch
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER dispatch
EXPOSE 8080
# Ready on the port the server listens on (DISPATCH_PORT, which a deployment may change); an error status or
# a refused connection raises, which exits 1.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('DISPATCH_PORT', '8080'), timeout=2)"
CMD ["dispatch", "serve"]
