"""A scheduler at a ``tls://`` address is reached with the certificates named in Dask's own
config (``distributed.comm.tls.*``, docs/operations.md, "Scaling out"): no setting of the
project's; without them, the error says what to set."""

import dask
import pytest
from distributed import LocalCluster
from distributed.security import Security

from gap_study.pipeline.engine import EngineError, open_engine
from gap_study.pipeline.params import ComputeParams


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    """A scheduler and a worker (in this process) that speak TLS alone, with a certificate
    made here, and the files a client needs: CA, certificate and key."""
    folder = tmp_path_factory.mktemp("tls")
    security = Security.temporary()
    files = {"ca-file": security.tls_ca_file, "client.cert": security.tls_client_cert,
             "client.key": security.tls_client_key}
    for name, contents in files.items():
        (folder / f"{name}.pem").write_text(contents)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tls",
                      host="127.0.0.1", security=security, dashboard_address=None) as cluster:
        yield cluster.scheduler_address, {f"distributed.comm.tls.{name}": str(folder /
                                                                             f"{name}.pem")
                                          for name in files}


def _compute(address: str) -> ComputeParams:
    return ComputeParams(scheduler=address, threads_per_run=1, workers=None)


def test_a_tls_scheduler_runs_the_tasks_with_the_certificates_of_dasks_config(tls_cluster):
    address, config = tls_cluster
    assert address.startswith("tls://")
    with dask.config.set(config), open_engine(_compute(address)) as engine:
        assert engine.map(abs, [-2, 3], shared={}, name="abs") == [2, 3]


def test_a_tls_address_without_certificates_says_which_settings_to_set(tls_cluster):
    address, _ = tls_cluster
    with pytest.raises(EngineError) as refused, open_engine(_compute(address)):
        pytest.fail("the engine opened")
    message = str(refused.value)
    assert address in message and "distributed.comm.tls.client.cert" in message
    assert "DASK_DISTRIBUTED__COMM__TLS__CA_FILE" in message
