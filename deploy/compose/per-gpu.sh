#!/bin/bash
# One wno worker per GPU on this box, as a Compose override file.
#
#   deploy/compose/per-gpu.sh 4 > docker-compose.override.yml    # GPUs 0..3 (write it beside docker-compose.yml)
#   deploy/compose/per-gpu.sh 0 2 5 > docker-compose.override.yml # exactly these GPUs
#   docker compose up -d                                          # reads the override by itself
#
# Compose cannot give the replicas of one service different GPUs (`--scale worker=N` puts them
# all on the GPU `worker` reserves), so this writes one service per GPU: the `worker` service
# takes the first GPU and worker-gpuK (extending it) each take GPU K. Inside each container its
# GPU is cuda:0, so every one runs `wno worker --gpu 0`. `!override` replaces the inherited GPU
# list instead of appending to it; it needs Docker Compose 2.24.4 or newer.
set -euo pipefail

usage() {
  echo "usage: $0 COUNT | $0 GPU_INDEX GPU_INDEX ...   (e.g. '$0 4' or '$0 0 2 5')" >&2
  exit 2
}

[ $# -ge 1 ] || usage
for arg in "$@"; do
  [[ "$arg" =~ ^[0-9]+$ ]] || { echo "not a GPU count or index: '$arg'" >&2; usage; }
done
if [ $# -eq 1 ]; then
  [ "$1" -ge 1 ] || { echo "the GPU count must be at least 1, got $1" >&2; usage; }
  mapfile -t gpus < <(seq 0 $(($1 - 1)))
else
  gpus=("$@")
fi
if [ "$(printf '%s\n' "${gpus[@]}" | sort -u | wc -l)" -ne "${#gpus[@]}" ]; then
  echo "a GPU index appears twice in: ${gpus[*]}" >&2
  exit 2
fi

reservation() {
  cat <<YAML
    deploy:
      resources:
        reservations:
          devices: !override
            - driver: nvidia
              device_ids: ["$1"]
              capabilities: [gpu]
YAML
}

echo "# Written by deploy/compose/per-gpu.sh $*: one worker per GPU (${gpus[*]})."
echo "services:"
echo "  worker:"
reservation "${gpus[0]}"
for gpu in "${gpus[@]:1}"; do
  echo "  worker-gpu${gpu}:"
  echo "    extends: {file: docker-compose.yml, service: worker}"
  reservation "$gpu"
done
