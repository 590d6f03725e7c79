#!/usr/bin/env bash
# Taskfleet on a local kind cluster, for users with Docker (CI here has no Docker engine and uses an envtest control
# plane instead; see tests/support/k8s.py). From the repository root:
#
#   deploy/kind/up.sh          # cluster + images + chart + an example TaskQueue + a burst of tasks
#   deploy/kind/up.sh down     # delete the cluster
#
# Needs: docker, kind (>= 0.23), kubectl, helm (>= 3.14).
set -euo pipefail

CLUSTER=${CLUSTER:-taskfleet}
TAG=${TAG:-dev}
IMAGE=ghcr.io/taskfleet/taskfleet:$TAG
EXAMPLE_IMAGE=ghcr.io/taskfleet/examples:$TAG
NAMESPACE=${NAMESPACE:-taskfleet}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"

if [[ ${1:-} == down ]]; then kind delete cluster --name "$CLUSTER"; exit 0; fi
for tool in docker kind kubectl helm; do
    command -v "$tool" >/dev/null || { echo "up.sh: $tool is required" >&2; exit 1; }
done

step() { printf '\n==> %s\n' "$*"; }

step "cluster $CLUSTER"
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --config deploy/kind/cluster.yaml --name "$CLUSTER"
kubectl config use-context "kind-$CLUSTER" >/dev/null

step "images $IMAGE and $EXAMPLE_IMAGE"
docker build -f deploy/docker/Dockerfile -t "$IMAGE" .
docker build --build-arg "TASKFLEET_IMAGE=$IMAGE" -t "$EXAMPLE_IMAGE" deploy/examples/worker
kind load docker-image --name "$CLUSTER" "$IMAGE" "$EXAMPLE_IMAGE"

step "chart (operator + a dev Redis) in namespace $NAMESPACE"
helm upgrade --install taskfleet charts/taskfleet --namespace "$NAMESPACE" --create-namespace \
    --set image.tag="$TAG" --set devBrokers.redis.enabled=true --wait --timeout 5m

step "TaskQueue emails (deploy/examples/taskqueue.yaml)"
sed -e "s#ghcr.io/taskfleet/examples:0.1.0#$EXAMPLE_IMAGE#" deploy/examples/taskqueue.yaml \
    | kubectl -n "$NAMESPACE" apply -f -
kubectl -n "$NAMESPACE" wait --for=condition=Ready taskqueue/emails --timeout=60s

step "200 tasks from a one-off pod (the example image's tasks.py, send_email.delay), then the workers scale"
redis_url=$(kubectl -n "$NAMESPACE" get secret taskfleet-dev-brokers -o jsonpath='{.data.redis-url}' | base64 -d)
kubectl -n "$NAMESPACE" run producer --rm -i --restart=Never --image="$EXAMPLE_IMAGE" \
    --env="TASKFLEET_BROKER_URL=$redis_url" --command -- python -c '
import os
from tasks import app, send_email
app.configure(broker=os.environ["TASKFLEET_BROKER_URL"])
for i in range(200):
    send_email.delay(f"user{i}@example.com")
print("sent 200 tasks to queue emails")'
for _ in $(seq 12); do kubectl -n "$NAMESPACE" get taskqueues; sleep 5; done

echo
echo "Done. Try: kubectl -n $NAMESPACE get tq -o wide; kubectl -n $NAMESPACE describe tq emails;"
echo "           deploy/kind/up.sh down   # to delete the cluster"
