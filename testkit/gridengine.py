"""`qstat -j ID -xml` read as the tests' oracle of a Grid Engine job record, and the record
compared field by field with it."""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree import ElementTree

from producer.gridengine_record import GridEngineJob, TaskRange

JOB_TYPE_ARRAY = 0x80


@dataclass(frozen=True)
class QstatJob:
    """One job of `qstat -j ID -xml`: its fields as the bytes qstat printed."""

    job: ElementTree.Element

    @classmethod
    def parse(cls, xml: bytes) -> QstatJob:
        # qstat prints values unescaped, not always UTF-8: read the bytes as Latin-1 and encode
        # each value back the same way to get them exactly.
        job = ElementTree.fromstring(xml.decode("latin-1")).find("djob_info/element")
        if job is None:
            raise ValueError("no job in the qstat -xml output")
        return cls(job)

    def raw(self, tag: str) -> bytes | None:
        node = self.job.find(tag)
        return None if node is None or node.text is None else node.text.encode("latin-1")

    def text(self, tag: str) -> str | None:
        raw = self.raw(tag)
        return None if raw is None else raw.decode("utf-8", "replace")

    def number(self, tag: str) -> int | None:
        text = self.text(tag)
        return None if text is None else int(text)

    def rows(self, list_tag: str, *fields: str) -> list[tuple[bytes | None, ...]]:
        return [
            tuple(None if (node := element.find(name)) is None or node.text is None
                  else node.text.encode("latin-1") for name in fields)
            for element in self.job.findall(f"{list_tag}/*")
        ]

    def range(self, list_tag: str) -> TaskRange | None:
        rows = self.rows(list_tag, "RN_min", "RN_max", "RN_step")
        if not rows:
            return None
        start, end, step = (int(value or 0) for value in rows[0])
        return TaskRange(start, end, step)


def differences(job: GridEngineJob, oracle: QstatJob) -> dict[str, tuple[object, object]]:
    """Each field of the decoded job that is not what qstat says: name -> (decoded, qstat)."""
    shells = oracle.rows("JB_shell_list", "PN_path")
    array = oracle.range("JB_ja_structure") if (oracle.number("JB_type") or 0) & JOB_TYPE_ARRAY \
        else None
    pairs: dict[str, tuple[object, object]] = {
        "job_id": (job.job_id, oracle.number("JB_job_number")),
        "job_name": (job.job_name, oracle.text("JB_job_name")),
        "owner": (job.owner, oracle.text("JB_owner")),
        "owner_uid": (job.owner_uid, oracle.number("JB_uid")),
        "group": (job.group, oracle.text("JB_group")),
        "group_gid": (job.group_gid, oracle.number("JB_gid")),
        "account": (job.account, oracle.text("JB_account")),
        "project": (job.project, oracle.text("JB_project")),
        "work_dir": (job.work_dir, oracle.text("JB_cwd")),
        "script_file": (job.script_file, oracle.text("JB_script_file")),
        "exec_file": (job.exec_file, oracle.text("JB_exec_file")),
        "submit_time_ms": (job.submit_time_ms,
                           (oracle.number("JB_submission_time") or 0) * 1000),
        "parallel_environment": (job.parallel_environment, oracle.text("JB_pe")),
        "pe_slots": (job.pe_slots, oracle.range("JB_pe_range")),
        "array": (job.array, array),
        "environment": (list(job.environment), [
            (name or b"", value or b"")
            for name, value in oracle.rows("JB_env_list", "VA_variable", "VA_value")]),
        "hard_queues": ([(q.encode(),) for q in job.hard_queues],
                        oracle.rows("JB_hard_queue_list", "QR_name")),
        "hard_resources": ([(k.encode(), v.encode()) for k, v in job.hard_resources.items()],
                           oracle.rows("JB_hard_resource_list", "CE_name", "CE_stringval")),
        "job_args": ([(a,) for a in job.job_args], oracle.rows("JB_job_args", "ST_name")),
        "shell": (job.shell, shells[0][0].decode() if shells and shells[0][0] else None),
    }
    return {name: pair for name, pair in pairs.items() if pair[0] != pair[1]}
