#!/usr/bin/env bash
# Writes example-vm.yaml: the document of example-vm.kdl, compiled for linux-6.9, in a
# ConfigMap, and a pod that runs it with the node affinity `vmc affinity` gives it.
# Run from the repository's root after changing the spec: deploy/kubernetes/example-vm.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
vmc=${VMC:-target/debug/vmc}
spec=deploy/kubernetes/example-vm.kdl
abi=$(mktemp)
trap 'rm -f "$abi"' EXIT
# The path is given as the tests give it: the document records where its values came from.
"$vmc" compile "$spec" --platform linux-6.9 -o "$abi" >/dev/null
{
    cat <<'YAML'
# An example VM on Kubernetes: its ABI document in a ConfigMap, and a pod that runs it
# with `vmc run`, placed by the node affinity `vmc affinity` derives from the document,
# so only on a node that `vmc labels` (the node labeller) says can run it.
# Written by deploy/kubernetes/example-vm.sh from example-vm.kdl; the tests check that
# both still match what vmc writes.
apiVersion: v1
kind: ConfigMap
metadata:
  name: example-vm
  namespace: default
data:
  vm.abi: |
YAML
    sed 's/^/    /' "$abi"
    cat <<'YAML'
---
apiVersion: v1
kind: Pod
metadata:
  name: example-vm
  namespace: default
  labels:
    app.kubernetes.io/name: example-vm
spec:
  restartPolicy: Never
  # The nodes that can run the document, and only those (see `vmc affinity`).
  affinity:
YAML
    "$vmc" affinity "$abi" | sed 's/^/    /'
    cat <<'YAML'
  containers:
  - name: vm
    # An image with vmc on its PATH (`cargo install --path .` in this repository).
    image: vmc:0.1.0
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c"]
    # The guest kernel goes where the document's host bindings say; the VM's exit
    # status is the pod's (0: the self-test guest passed).
    args:
    - vmc selftest-guest -o /var/lib/vmc/selftest.elf && exec vmc run /etc/vmc/vm.abi
    securityContext:
      # /dev/kvm and /dev/net/tun, and a TAP in the pod's network namespace.
      privileged: true
    resources:
      requests:
        cpu: 100m
        memory: 128Mi
      limits:
        memory: 256Mi
    volumeMounts:
    - name: document
      mountPath: /etc/vmc
      readOnly: true
    - name: guest
      mountPath: /var/lib/vmc
    - name: kvm
      mountPath: /dev/kvm
    - name: tun
      mountPath: /dev/net/tun
  volumes:
  - name: document
    configMap:
      name: example-vm
  - name: guest
    emptyDir: {}
  - name: kvm
    hostPath:
      path: /dev/kvm
      type: CharDevice
  - name: tun
    hostPath:
      path: /dev/net/tun
      type: CharDevice
YAML
} > deploy/kubernetes/example-vm.yaml
echo "wrote deploy/kubernetes/example-vm.yaml"
