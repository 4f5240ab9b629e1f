"""Printed errors never carry the secrets a URI can hold."""

import pytest

from fatlib.core.cli import run_job
from fatlib.core.errors import UserError, redact


@pytest.mark.bad_input
def test_redact_removes_userinfo_and_query_and_keeps_the_location():
    assert redact("s3://b/p?access_key=AK&secret_key=SK/x.csv: not found") == "s3://b/p: not found"
    assert redact("'s3://AK:SK@bucket/x' is bad") == "'s3://bucket/x' is bad"
    assert redact("/local/dir?x and s3://bucket/a.parquet") == "/local/dir?x and s3://bucket/a.parquet"


@pytest.mark.bad_input
def test_run_job_prints_user_errors_redacted(capsys):
    def stage():
        raise UserError("gs://tok:en@bucket/f?sig=abc: denied")

    assert run_job("infer", stage, str) == 2
    assert capsys.readouterr().err == "infer: gs://bucket/f: denied\n"
