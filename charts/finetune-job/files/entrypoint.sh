#!/usr/bin/env bash
# Entry point of every pod of an operator-free finetune-job run (mounted from the run's
# ConfigMap at /etc/vlaunch). Kubernetes numbers Indexed Job pods with JOB_COMPLETION_INDEX:
#
#   pod 0       starts the Ray head, then runs the trainer driver `vlaunch run` with the
#               launch's plan, whose exit code becomes the pod's (0 finished, 75 interrupted
#               but resumable, 2 user error).
#               After a successful run it announces "done" on port 6380 to the workers, then
#               stops Ray.
#   pods 1..N-1 wait for the head (through the headless Service), join it as Ray workers and
#               exit 0 once the head announced "done"; 75 when the head went away without it
#               (the pod is replaced and joins the next head); 1 when the head never came up.
#
# So every pod exits when the run ends, and the Job completes only when the run finished.
# Ray runs with token authentication: the chart sets RAY_AUTH_MODE=token and RAY_AUTH_TOKEN
# (from the run's Secret) on every pod, and a pod without them refuses to start Ray (exit 2).
set -euo pipefail

ray_port="${VLAUNCH_RAY_PORT:-6379}"
done_port="${VLAUNCH_DONE_PORT:-6380}"
gpus="${VLAUNCH_GPUS_PER_NODE:-0}"

if [[ "${RAY_AUTH_MODE:-}" != "token" || -z "${RAY_AUTH_TOKEN:-}" ]]; then
  echo "refusing to start Ray without token authentication: RAY_AUTH_MODE=token and" \
    "RAY_AUTH_TOKEN must be set (the chart takes the token from the run's Secret)" >&2
  exit 2
fi

if [[ "${JOB_COMPLETION_INDEX:?not a pod of an Indexed Job}" != "0" ]]; then
  exec python -m launcher.k8s.rendezvous worker \
    --head "${VLAUNCH_HEAD_HOST}" --ray-port "${ray_port}" --done-port "${done_port}" \
    --wait "${VLAUNCH_HEAD_WAIT_SECONDS:-600}" -- "--num-gpus=${gpus}"
fi

ray start --head --port="${ray_port}" --node-ip-address="${POD_IP}" --num-gpus="${gpus}" \
  --dashboard-host=0.0.0.0 --disable-usage-stats

# The launch's plan (VLAUNCH_PLAN: set when the ConfigMap holds one) is what the workers use.
# Without one (a plain `helm install`), vlaunch run plans for this Job's pods and GPUs.
plan_args=()
if [[ -n "${VLAUNCH_PLAN:-}" ]]; then
  plan_args=(--plan "${VLAUNCH_PLAN}")
else
  plan_args=("resources.nodes=${VLAUNCH_NODES:-1}")
  if [[ "${gpus}" != "0" ]]; then
    plan_args+=("resources.gpus_per_node=${gpus}")
  fi
fi
vlaunch run /etc/vlaunch/job.yaml --ray-address "127.0.0.1:${ray_port}" "${plan_args[@]}" \
  "output.dir=${VLAUNCH_OUTPUT_DIR}" &
driver=$!
# Kubernetes stops a pod with SIGTERM: pass it to the driver, which checkpoints and exits 75.
trap 'kill -TERM "${driver}" 2>/dev/null || true' TERM INT
rc=0
wait "${driver}" || rc=$?
while kill -0 "${driver}" 2>/dev/null; do
  # `wait` returned because of the trapped signal; the driver is still checkpointing.
  rc=0
  wait "${driver}" || rc=$?
done

announcer=""
if [[ "${rc}" == "0" ]]; then
  python -m launcher.k8s.rendezvous announce --port "${done_port}" \
    --expect "$((${VLAUNCH_NODES:-1} - 1))" --seconds 120 &
  announcer=$!
fi
ray stop --force >/dev/null 2>&1 || true
if [[ -n "${announcer}" ]]; then
  wait "${announcer}" || true
fi
exit "${rc}"
