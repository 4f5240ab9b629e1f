"""Printed errors never carry the secrets a URI can hold."""

import pytest

from fatlib.core.cli import run_job
from fatlib.core.errors import UserError, redact


@pytest.mark.bad_input
def test_redact_hides_userinfo_and_query_and_keeps_the_location():
    assert (redact("s3://b/p?access_key=AK&secret_key=SK/x.csv: not found")
            == "s3://b/p?***: not found")
    assert redact("'s3://AK:SK@bucket/x' is bad") == "'s3://***@bucket/x' is bad"
    assert redact("/local/dir?x and s3://bucket/a.parquet") == "/local/dir?x and s3://bucket/a.parquet"


@pytest.mark.bad_input
@pytest.mark.parametrize(("text", "shown"), [
    # a secret holding '/': everything up to the last '@' is hidden
    ("s3://AKIAEXAMPLE:abc/def+ghi@bucket/x: bad", "s3://***@bucket/x: bad"),
    ("s3://TOKEN/WITH/SLASH@bucket/x", "s3://***@bucket/x"),
    ("s3://user@bucket/x", "s3://***@bucket/x"),
    ("s3://KEY:SE?C#R/ET@bucket/x?sig=1", "s3://***@bucket/x?***"),
    # key:secret without the '@': a "port" that is no number
    ("gs://KEY:SECRET/x", "gs://***/x"),
    ("'s3://KEY:SECRET'", "'s3://***'"),
    # two locations in one run of characters: the secret of the second is hidden too
    ("('s3://c/y','s3://K:S/E@b/x')", "('s3://***@b/x')"),
])
def test_redact_hides_userinfo_of_every_shape(text, shown):
    assert redact(text) == shown


def test_redact_keeps_hosts_with_ports_and_plain_locations():
    for text in ("http://127.0.0.1:8080/x: refused", "hdfs://namenode:8020/data",
                 "'s3://bucket': no such bucket", "s3://b/x/take#2.wav: not found"):
        assert redact(text) == text


@pytest.mark.bad_input
def test_run_job_prints_user_errors_redacted(capsys):
    def stage():
        raise UserError("gs://tok:en@bucket/f?sig=abc: denied")

    assert run_job("infer", stage, str) == 2
    assert capsys.readouterr().err == "infer: gs://***@bucket/f?***: denied\n"
