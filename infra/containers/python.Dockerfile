# The local stand-in for python:3.11-slim (no registry here): the debootstrap base with
# Debian's Python 3.11 and venv. infra/images.py builds it; deploy/Dockerfile takes it as
# BASE_IMAGE.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update -q \
    && apt-get install -y -q --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
