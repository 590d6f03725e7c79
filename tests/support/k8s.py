"""A private Kubernetes control plane for e2e tests: real etcd and kube-apiserver run as local processes on free
loopback ports, the way controller-runtime's envtest does. It never touches a cluster of the machine's.

The recipe is in /work/shared/K8S-TESTING.md ("Running it"). There is no controller-manager or scheduler, so
namespaces never finish deleting and ownerReference garbage collection does not run: give each test its own
namespace (``create_namespace``) and do not assert on GC. The binaries come from ``k8s_bin_dir``; when they cannot be
had, ``ServerUnavailable`` sends the fixture through ``require_server`` (skip locally, fail in CI).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import itertools
import json
import os
import secrets
import signal
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

from tests.support.servers import ServerUnavailable, free_port

#: What tests/k8s/build-testbin.sh builds (keep in step with it); the apiserver reports it as its gitVersion.
K8S_VERSION = "v1.34.4"
BINARIES = ("etcd", "kube-apiserver", "kubectl", "helm")
#: A directory holding ``BINARIES`` to use instead of building them (e.g. binaries from a release tarball).
BIN_DIR_ENV = "TASKFLEET_K8S_BIN"
BUILD_SCRIPT = Path(__file__).resolve().parents[1] / "k8s" / "build-testbin.sh"
BUILD_TIMEOUT_S = 3600.0  # a cold build takes 15-20 min on 2 cores; leave room for a slow machine or proxy
START_TIMEOUT_S = 60.0  # etcd + kube-apiserver usually take 5-10 s
STOP_TIMEOUT_S = 10.0
PROBE_TIMEOUT_S = 2.0
KUBECTL_TIMEOUT_S = 60.0  # above ESTABLISHED_TIMEOUT, which kubectl waits out itself
ESTABLISHED_TIMEOUT = "30s"
OPENSSL_TIMEOUT_S = 60.0
CLUSTER = "taskfleet-envtest"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
# Only used for the `kubernetes` Service's endpoints, which nothing here dials; see _advertise_address.
FALLBACK_ADVERTISE_ADDRESS = "192.0.2.1"

# Extension sections for the three certificates (the distinguished names are given with -subj).
_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[serving_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
authorityKeyIdentifier = keyid
[client_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
"""


class KubectlError(subprocess.CalledProcessError):
    """kubectl exited non-zero. Unlike CalledProcessError, the message carries kubectl's stderr, which is where the
    reason is."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{str(self.stderr).strip()[-2000:]}"


def k8s_bin_dir() -> Path:
    """The directory with etcd, kube-apiserver, kubectl and helm: ``$TASKFLEET_K8S_BIN`` when set, else what
    tests/k8s/build-testbin.sh prints on its last line (it builds the binaries on a cold machine and only prints the
    cached directory afterwards). Raises ServerUnavailable when the binaries cannot be had."""
    configured = os.environ.get(BIN_DIR_ENV)
    bin_dir, source = (Path(configured), f"${BIN_DIR_ENV}") if configured else (_build_testbin(), BUILD_SCRIPT.name)
    missing = [name for name in BINARIES if not os.access(bin_dir / name, os.X_OK)]
    if missing:
        raise ServerUnavailable(f"{source}: {bin_dir} lacks {', '.join(missing)}")
    return bin_dir


def _build_testbin() -> Path:
    """Run build-testbin.sh and return the directory it prints last.

    The per-test timeout is paused meanwhile: a cold build takes far longer than any test may, it is a one-off cost
    of the machine rather than of the test, and killing it halfway would only make the next run start over.
    """
    try:
        with _alarm_paused():
            result = subprocess.run(
                ["bash", str(BUILD_SCRIPT)], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                timeout=BUILD_TIMEOUT_S, check=False,
            )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServerUnavailable(f"{BUILD_SCRIPT.name} failed: {exc}") from exc
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise ServerUnavailable(
            f"{BUILD_SCRIPT.name} exited with {result.returncode}: {result.stderr.strip()[-2000:]}"
        )
    return Path(lines[-1])


@contextlib.contextmanager
def _alarm_paused() -> Iterator[None]:
    """Disarm the process's real-time interval timer (pytest-timeout's per-test SIGALRM, when armed) and re-arm it
    afterwards with the time that was left."""
    delay, interval = signal.setitimer(signal.ITIMER_REAL, 0)
    try:
        yield
    finally:
        if delay:
            signal.setitimer(signal.ITIMER_REAL, delay, interval)


def _openssl(pki: Path, *args: str) -> None:
    try:
        result = subprocess.run(
            ["openssl", *args], cwd=pki, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=OPENSSL_TIMEOUT_S, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServerUnavailable(f"openssl {args[0]} failed: {exc}") from exc
    if result.returncode != 0:
        raise ServerUnavailable(f"openssl {' '.join(args)} failed: {result.stderr.strip()[-2000:]}")


def _write_pki(pki: Path) -> None:
    """Create the control plane's keys and certificates in ``pki`` with the openssl CLI: ``ca.crt``/``ca.key``; the
    apiserver's ``serving.crt``/``.key`` for 127.0.0.1 and localhost; the client ``admin.crt``/``.key`` (group
    ``system:masters``, so RBAC lets it do anything from the first second); ``sa.key``/``sa.pub`` to sign and check
    service-account tokens."""
    pki.mkdir(mode=0o700, exist_ok=True)
    (pki / "openssl.cnf").write_text(_OPENSSL_CONFIG)
    _openssl(
        pki, "req", "-x509", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "30", "-subj", f"/CN={CLUSTER}-ca", "-config", "openssl.cnf", "-extensions", "ca_ext",
    )
    for name, subject, extensions in (
        ("serving", "/CN=kube-apiserver", "serving_ext"),
        ("admin", "/O=system:masters/CN=admin", "client_ext"),
    ):
        _openssl(
            pki, "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", subject, "-config", "openssl.cnf",
        )
        _openssl(
            pki, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-set_serial", str(secrets.randbits(63)), "-days", "30", "-out", f"{name}.crt",
            "-extfile", "openssl.cnf", "-extensions", extensions,
        )
    _openssl(pki, "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "sa.key")
    _openssl(pki, "pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub")


def _distinct_free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        if (port := free_port()) not in ports:
            ports.append(port)
    return ports


def _has_default_route() -> bool:
    """True when the host has an IPv4 default route (a ``00000000`` destination in /proc/net/route)."""
    try:
        lines = Path("/proc/net/route").read_text().splitlines()[1:]
    except OSError:
        return True  # not Linux: let the apiserver pick its address as usual
    return any(line.split()[1:2] == ["00000000"] for line in lines)


def _advertise_address() -> list[str]:
    """kube-apiserver's ``--advertise-address``, needed only on a host without a default route: bound to loopback,
    the apiserver advertises the default route's address and exits without one ("Unable to find suitable network
    address"). Loopback is no way out: it starts, but never writes the ``kubernetes`` Service's endpoints. Any other
    address does, as nothing here dials that Service (checked in a network namespace with only ``lo``)."""
    return [] if _has_default_route() else [f"--advertise-address={FALLBACK_ADVERTISE_ADDRESS}"]


class ControlPlane:
    """etcd plus kube-apiserver with RBAC, service-account tokens, and a kubeconfig for an admin client
    (``system:masters``).

    ``stop()`` then ``start()`` restarts both on the same ports and etcd data directory, so the cluster's objects
    survive. ``close()`` stops them for good and deletes the directory (PKI, data, logs, kubeconfig). Subprocesses
    such as the operator or helm get the cluster through ``env()``.
    """

    def __init__(self) -> None:
        self.bin_dir = k8s_bin_dir()
        self.etcd_port, self.peer_port, self.port = _distinct_free_ports(3)
        self._tmp = tempfile.TemporaryDirectory(prefix="tf-k8s-")
        self.dir = Path(self._tmp.name)
        self.pki = self.dir / "pki"
        #: A self-contained kubeconfig (certificates embedded), current context set.
        self.kubeconfig = self.dir / "kubeconfig"
        self._etcd: subprocess.Popen[bytes] | None = None
        self._apiserver: subprocess.Popen[bytes] | None = None
        self._namespace_numbers = itertools.count(1)

    @property
    def server_url(self) -> str:
        """``https://127.0.0.1:<port>`` of the kube-apiserver."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """True while both etcd and kube-apiserver are alive."""
        return all(process is not None and process.poll() is None for process in (self._etcd, self._apiserver))

    def start(self) -> ControlPlane:
        """Start etcd, then kube-apiserver (no-op when both run), and return once the apiserver's ``/readyz`` is 200.

        Raises ServerUnavailable, with the tail of both logs, when a process exits while starting or the apiserver
        is not ready within ``START_TIMEOUT_S``. Whatever interrupts the start stops what was started.
        """
        if self.running:
            return self
        self.stop()
        if not self.kubeconfig.exists():
            _write_pki(self.pki)
            self._write_kubeconfig()
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            self._etcd = self._spawn("etcd", self._etcd_args())
            self._wait_until(self._etcd_healthy, "etcd /health", deadline)
            self._apiserver = self._spawn("kube-apiserver", self._apiserver_args())
            self._wait_until(self._apiserver_ready, "kube-apiserver /readyz", deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop kube-apiserver, then etcd (SIGTERM, SIGKILL if one lingers), and wait for both. Only the processes
        this object started are signalled. The data stays for the next ``start()``."""
        for process in (self._apiserver, self._etcd):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(STOP_TIMEOUT_S)
        self._apiserver = self._etcd = None

    def close(self) -> None:
        """Stop the control plane and delete its directory. The object is done with after."""
        try:
            self.stop()
        finally:
            self._tmp.cleanup()

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl against this cluster (stdin ``input``) and return what it printed.

        Raises KubectlError (with kubectl's stderr) on a non-zero exit when ``check``. Discovery is cached in the
        control plane's directory, not ``~/.kube/cache``, so nothing leaks between runs that reuse a port.
        """
        command = [
            str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", f"--cache-dir={self.dir / 'kube-cache'}",
            *args,
        ]
        result = subprocess.run(
            command, input=input, capture_output=True, text=True, timeout=KUBECTL_TIMEOUT_S, check=False
        )
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, command, result.stdout, result.stderr)
        return result

    def env(self) -> dict[str, str]:
        """``os.environ`` for a subprocess that should talk to this cluster (operator, helm, kubectl): ``KUBECONFIG``
        set and ``bin_dir`` first on ``PATH``."""
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "KUBECACHEDIR": str(self.dir / "kube-cache"),
            "PATH": os.pathsep.join([str(self.bin_dir), os.environ.get("PATH", os.defpath)]),
        }

    def create_namespace(self, prefix: str) -> str:
        """Create a namespace named ``<prefix>-<n>`` and return its name. The cluster lives for one session, so a
        counter makes it unique; namespaces are never deleted (without controllers they would stay Terminating)."""
        name = f"{prefix}-{next(self._namespace_numbers)}"
        self.kubectl("create", "namespace", name)
        return name

    def apply_crd(self, path: Path) -> list[str]:
        """``kubectl apply`` the CustomResourceDefinition(s) in ``path``, wait until each is Established (until
        then the API answers "the server could not find the requested resource" for its objects) and return their
        resource names (``customresourcedefinition.apiextensions.k8s.io/<plural>.<group>``)."""
        applied = self.kubectl("apply", "-f", str(path), "-o", "name").stdout.split()
        crds = [name for name in applied if name.startswith("customresourcedefinition.")]
        if not crds:
            raise ValueError(f"{path} holds no CustomResourceDefinition (applied: {applied})")
        self.kubectl("wait", "--for=condition=Established", f"--timeout={ESTABLISHED_TIMEOUT}", *crds)
        return crds

    def _etcd_args(self) -> list[str]:
        client, peer = f"http://127.0.0.1:{self.etcd_port}", f"http://127.0.0.1:{self.peer_port}"
        return [
            f"--data-dir={self.dir / 'etcd'}", f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}", f"--initial-cluster=default={peer}",
            # Test data is disposable; fsync would make every write wait for the disk.
            "--unsafe-no-fsync=true",
        ]

    def _apiserver_args(self) -> list[str]:
        pki = self.pki
        return [
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1", f"--secure-port={self.port}", f"--cert-dir={self.dir / 'apiserver-certs'}",
            f"--tls-cert-file={pki / 'serving.crt'}", f"--tls-private-key-file={pki / 'serving.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}", f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            # Without a controller-manager no namespace gets a `default` ServiceAccount, which that plugin requires
            # of every pod.
            "--disable-admission-plugins=ServiceAccount",
            *_advertise_address(),
        ]

    def _write_kubeconfig(self) -> None:
        """Write ``kubeconfig`` as JSON (which is YAML, so kubectl, helm, kopf and the kubernetes client all read
        it), with the certificates embedded, readable only by us (helm warns otherwise)."""

        def data(name: str) -> str:
            return base64.b64encode((self.pki / name).read_bytes()).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": CLUSTER, "cluster": {"server": self.server_url, "certificate-authority-data": data("ca.crt")}}
            ],
            "users": [
                {"name": "admin", "user": {
                    "client-certificate-data": data("admin.crt"), "client-key-data": data("admin.key"),
                }}
            ],
            "contexts": [{"name": CLUSTER, "context": {"cluster": CLUSTER, "user": "admin"}}],
            "current-context": CLUSTER,
        }
        self.kubeconfig.touch(mode=0o600)
        self.kubeconfig.write_text(json.dumps(config, indent=2) + "\n")

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        with (self.dir / f"{name}.log").open("ab") as log:
            return subprocess.Popen(
                [str(self.bin_dir / name), *args], cwd=self.dir, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT,
            )

    def _wait_until(self, ready: Callable[[], bool], what: str, deadline: float) -> None:
        """Poll ``ready`` until it is true; ServerUnavailable when a started process exits first or ``deadline``
        (monotonic) passes."""
        while not ready():
            for name, process in (("etcd", self._etcd), ("kube-apiserver", self._apiserver)):
                if process is not None and process.poll() is not None:
                    raise ServerUnavailable(
                        f"{name} exited with {process.returncode} while starting: {self._log_tail()}"
                    )
            if time.monotonic() >= deadline:
                raise ServerUnavailable(f"{what} not ready in {START_TIMEOUT_S}s: {self._log_tail()}")
            time.sleep(0.1)

    def _etcd_healthy(self) -> bool:
        connection = http.client.HTTPConnection("127.0.0.1", self.etcd_port, timeout=PROBE_TIMEOUT_S)
        return _status(connection, "/health") == 200

    def _apiserver_ready(self) -> bool:
        context = ssl.create_default_context(cafile=self.pki / "ca.crt")
        context.load_cert_chain(self.pki / "admin.crt", self.pki / "admin.key")
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=PROBE_TIMEOUT_S, context=context)
        return _status(connection, "/readyz") == 200

    def _log_tail(self) -> str:
        parts = []
        for name in ("etcd", "kube-apiserver"):
            path = self.dir / f"{name}.log"
            try:
                parts.append(f"--- {path.name}:\n{path.read_text(errors='replace')[-2000:]}")
            except OSError:
                parts.append(f"--- {path.name}: (none)")
        return "\n".join(parts)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _status(connection: http.client.HTTPConnection, path: str) -> int | None:
    """Status of ``GET path`` on a fresh connection, None when it cannot be had. http.client rather than urllib:
    urllib would send loopback requests through a proxy named in the environment."""
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()
