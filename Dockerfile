# gqe for GPU users: the CUDA 13 toolkit, our Debian/Ubuntu packages, torch 2.11 (whose LibTorch we
# link) and gqe built, all by scripts/setup.sh, as on any machine, so the image cannot drift from it.
#
#   docker build -t gqe .
#   docker run --gpus all -v "$PWD/data:/gqe/data" -v "$PWD/runs:/gqe/runs" gqe \
#       gqe train configs/gqe-250m.yaml --run-dir runs/gqe-250m
#   docker run --gpus all gqe scripts/gpu_report.sh     # the numbers of docs/performance.md
#
# Not built in our CI (no Docker engine there); keep it in step with scripts/setup.sh.
# scripts/check_image_userland.sh replays these steps in an Ubuntu 24.04 chroot instead.
ARG CUDA_IMAGE=nvidia/cuda:13.0.0-devel-ubuntu24.04
FROM ${CUDA_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# Our CUDA kernels' architectures: an image is built without a GPU to ask, so A100 (8.0) and
# H100/H200 (9.0; later GPUs run its PTX). --build-arg TORCH_CUDA_ARCH_LIST=... to change it.
ARG TORCH_CUDA_ARCH_LIST="8.0 9.0"

WORKDIR /gqe
COPY . .
# The tests and their GoogleTest build stay out of the image; scripts/test.sh adds them.
RUN GQE_VENV=/opt/gqe-venv GQE_TARGETS="gqe gqe-data" scripts/setup.sh \
    && rm -rf /var/lib/apt/lists/* /root/.cache/pip
ENV GQE_VENV=/opt/gqe-venv PATH=/gqe/build:$PATH
CMD ["gqe", "--help"]
