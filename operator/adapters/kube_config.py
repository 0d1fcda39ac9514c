"""How the operator reaches the API server, one way for its own client and kopf's.

In a pod: the ServiceAccount (in-cluster config). Outside one (a laptop, CI, a VM next to
the cluster): ``--kubeconfig`` if given, else ``$KUBECONFIG`` or ``~/.kube/config``. An
explicit ``--kubeconfig`` wins even in a pod. The client's ``Configuration`` is then the one
source kopf's login is built from (``runtime.kopf_login``), so both speak as the same user.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class KubeAccess:
    configuration: Any            # kubernetes.client.Configuration
    source: str                   # "in-cluster" or the kubeconfig's path, for the log

    def api_client(self) -> Any:
        import kubernetes

        return kubernetes.client.ApiClient(self.configuration)

    def bearer(self) -> tuple[str | None, str | None]:
        """(scheme, token) of the Authorization header, if the config has one."""
        config = self.configuration
        header = config.get_api_key_with_prefix("BearerToken") or config.get_api_key_with_prefix("authorization")
        parts = header.split(" ", 1) if header else []
        if not parts:
            return None, None
        return (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])


def load(kubeconfig: Path | None = None) -> KubeAccess:
    import os

    import kubernetes

    configuration = kubernetes.client.Configuration()
    if kubeconfig is None:
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
            return KubeAccess(configuration, "in-cluster")
        except kubernetes.config.ConfigException:
            pass
    path = str(kubeconfig) if kubeconfig else os.environ.get("KUBECONFIG") or None
    try:  # None: the client's own default ($KUBECONFIG, colon-separated lists included)
        kubernetes.config.load_kube_config(config_file=str(kubeconfig) if kubeconfig else None,
                                           client_configuration=configuration)
    except (kubernetes.config.ConfigException, OSError) as exc:
        raise RuntimeError(f"no Kubernetes credentials: not in a pod, and kubeconfig "
                           f"{path or '~/.kube/config'}: {exc}") from None
    return KubeAccess(configuration, path or "~/.kube/config")
