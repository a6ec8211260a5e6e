# The local stand-in for eclipse-temurin:17-jre (no registry here): the debootstrap base with
# Debian's Java 17 runtime. infra/images.py builds it; deploy/kafka/Dockerfile and
# deploy/elasticsearch/Dockerfile take it as JAVA_IMAGE.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update -q \
    && apt-get install -y -q --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/*
