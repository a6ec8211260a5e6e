"""infra's secured broker and three-broker cluster: started only when named, on ports and run
directories of their own, with the configuration sites are told to run (no service started)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from infra.kafka import new_cluster_id
from infra.kafka_cluster import KafkaClusterService
from infra.kafka_secure import SecureKafkaService
from infra.kafka_tls import CertificateAuthority
from infra.registry import registry, select
from infra.service import repo_root


def test_up_with_no_service_named_starts_neither_the_secure_broker_nor_the_cluster(
        tmp_path: Path) -> None:
    names = [s.name for s in select(registry(tmp_path, repo_root()), [])]
    assert names == ["kafka", "slurm", "elasticsearch"]


def test_secure_broker_and_cluster_use_their_own_ports_and_directories(tmp_path: Path) -> None:
    secure = SecureKafkaService(tmp_path, repo_root())
    cluster = KafkaClusterService(tmp_path, repo_root())
    nodes = [cluster.controller, *cluster.brokers.values()]
    ports = [secure.port, secure.mtls_port, secure.controller_port,
             *(node.port for node in nodes)]
    assert 19092 not in ports and 19093 not in ports
    assert len(set(ports)) == len(ports)
    homes = [secure.home, *(node.home for node in nodes)]
    assert len(set(homes)) == len(homes)
    assert all(home.is_relative_to(tmp_path) and home != tmp_path / "kafka" for home in homes)


def test_cluster_brokers_replicate_three_ways_with_two_in_sync_and_no_unclean_election(
        tmp_path: Path) -> None:
    broker = KafkaClusterService(tmp_path, repo_root()).brokers[2]
    broker.home.mkdir(parents=True)
    broker._write_config()  # the rendered template is what this test checks
    config = dict(line.split("=", 1) for line in broker.config.read_text().splitlines()
                  if line and not line.startswith("#"))
    assert config["default.replication.factor"] == "3"
    assert config["min.insync.replicas"] == "2"
    assert config["unclean.leader.election.enable"] == "false"
    assert config["controller.quorum.voters"] == "0@127.0.0.1:19295"
    assert config["listeners"] == "PLAINTEXT://127.0.0.1:19293"


def test_certificates_carry_the_principal_as_cn_and_an_expired_one_fails_verification(
        tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path)
    ca.create("/O=test/CN=test CA")
    valid, _ = ca.issue("producer")
    expired, _ = ca.issue("producer", days=-1, file_stem="expired")

    def verify(cert: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["openssl", "verify", "-CAfile", str(ca.pem), str(cert)],
                              capture_output=True, text=True, check=False)
    subject = subprocess.run(["openssl", "x509", "-in", str(valid), "-noout", "-subject",
                              "-nameopt", "RFC2253"], capture_output=True, text=True,
                             check=True).stdout
    assert subject.strip() == "subject=CN=producer,O=sarchive test"
    assert verify(valid).returncode == 0
    assert "certificate has expired" in verify(expired).stdout + verify(expired).stderr


def test_cluster_id_never_starts_with_a_dash_the_storage_tool_would_read_as_an_option() -> None:
    draws = iter([b"\xf8" + bytes(15), bytes(16)])  # the first encodes to "-A..."
    cluster_id = new_cluster_id(lambda: next(draws))
    assert cluster_id == "A" * 22
    assert len(new_cluster_id()) == 22
