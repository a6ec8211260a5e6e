"""What sites leaked in job environments with the old redaction defaults: each environment
entry with the secret it holds (the URL's entry keeps its URL, only its password is secret).
Shared by the unit and the integration tests of the producer's redaction."""

LEAKED = (
    (b"SSHPASS=hunter2-ssh", b"hunter2-ssh"),
    (b"MYSQL_PWD=hunter2-mysql", b"hunter2-mysql"),
    (b"GITHUB_PAT=github_pat_11ABCDEFG0123456789_abcdefghij", b"11ABCDEFG0123456789"),
    (b"AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE", b"AKIAIOSFODNN7EXAMPLE"),
    (b"DATABASE_URL=postgres://user:pg-password@host/db", b"pg-password"),
    (b"NOTE=see ghp_0123456789abcdefghij0123456789abcdef", b"0123456789abcdefghij"),
)
LEAKED_KEYS = ("SSHPASS", "MYSQL_PWD", "GITHUB_PAT", "AWS_ACCESS_KEY_ID", "DATABASE_URL", "NOTE")
