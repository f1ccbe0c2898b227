"""Storage passwords never appear in output, logs, errors or stored attributes, and
unusable storage URLs give one error line with the URL masked.
"""

from __future__ import annotations

import json

import pytest
import sqlalchemy
from sqlalchemy.engine import make_url

from search.cli import main
from search.storage import mask_url
from tests.test_spec_errors import study_text

PASSWORD = "s3cretpw"


def with_password(url: str) -> str:
    return make_url(url).set(password=PASSWORD).render_as_string(hide_password=False)


def study_file(tmp_path, name: str = "secret"):
    path = tmp_path / f"{name}.toml"
    path.write_text(study_text(name=name, n_trials=1, max_epochs=1), encoding="utf-8")
    return path


def stored_text(url: str) -> str:
    """Return every row of every table in the database as text.

    That covers the study and trial attributes (user and system), parameters
    and the per-epoch rows.
    """
    engine = sqlalchemy.create_engine(url)
    try:
        metadata = sqlalchemy.MetaData()
        metadata.reflect(engine)
        with engine.connect() as connection:
            rows = {
                name: [list(row) for row in connection.execute(table.select())]
                for name, table in metadata.tables.items()
            }
    finally:
        engine.dispose()
    assert "study_user_attributes" in rows
    assert "search_epochs" in rows
    return json.dumps(rows, default=str)


@pytest.mark.timeout(300)
def test_password_hidden_in_run_on_postgresql(tmp_path, capfd, postgresql_url):
    # Trust authentication accepts any password, so the run succeeds with one.
    url = with_password(postgresql_url)

    status = main(
        ["-v", "-v", "run", "--study", str(study_file(tmp_path)), "--storage", url]
    )

    captured = capfd.readouterr()
    assert status == 0
    assert PASSWORD not in captured.out
    assert PASSWORD not in captured.err
    assert mask_url(url) in captured.out
    assert "***" in captured.out
    assert PASSWORD not in stored_text(url)


def test_password_hidden_when_definition_changed(tmp_path, capfd, postgresql_url):
    url = with_password(postgresql_url)
    path = study_file(tmp_path)
    assert main(["run", "--study", str(path), "--storage", url]) == 0
    path.write_text(
        study_text(name="secret", n_trials=1, max_epochs=2), encoding="utf-8"
    )
    capfd.readouterr()

    status = main(["run", "--study", str(path), "--storage", url])

    captured = capfd.readouterr()
    assert status == 2
    assert "training.max_epochs: 1 -> 2" in captured.err
    assert PASSWORD not in captured.out + captured.err


UNUSABLE = [
    (
        "refused-port",
        f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:1/search",
        "cannot connect to storage 'postgresql+psycopg://postgres:***@127.0.0.1:1/search'",
    ),
    (
        "refused-ipv6",
        f"postgresql+psycopg://postgres:{PASSWORD}@[::1]:1/search",
        "cannot connect to storage 'postgresql+psycopg://postgres:***@[::1]:1/search'",
    ),
    (
        "wrong-password-mysql",
        f"mysql+pymysql://root:{PASSWORD}@127.0.0.1:3306/test",
        "cannot connect to storage 'mysql+pymysql://root:***@127.0.0.1:3306/test'",
    ),
    (
        "missing-database",
        f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:5432/search_no_such_db",
        'database "search_no_such_db" does not exist',
    ),
    (
        "wrong-scheme",
        f"postgres://postgres:{PASSWORD}@127.0.0.1:5432/search",
        "unsupported storage URL scheme 'postgres' in "
        "'postgres://postgres:***@127.0.0.1:5432/search'",
    ),
    (
        "missing-driver",
        f"postgresql+psycopg2://postgres:{PASSWORD}@127.0.0.1:5432/search",
        "unsupported storage URL scheme 'postgresql+psycopg2'",
    ),
    (
        "missing-sqlite-folder",
        "sqlite:////nonexistent-search-folder/study.db",
        "folder /nonexistent-search-folder does not exist",
    ),
    ("unparsable", f"://{PASSWORD}", "invalid storage URL '<unparsable storage URL>'"),
]


@pytest.mark.parametrize(
    ("url", "message"),
    [case[1:] for case in UNUSABLE],
    ids=[case[0] for case in UNUSABLE],
)
def test_unusable_storage_one_masked_line(tmp_path, capfd, url, message):
    status = main(["run", "--study", str(study_file(tmp_path)), "--storage", url])

    captured = capfd.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert status == 2
    assert len(errors) == 1
    assert message in errors[0]
    assert "Traceback" not in captured.err
    assert PASSWORD not in captured.out + captured.err


def test_mask_url_hides_encoded_password():
    url = "postgresql+psycopg://user:p%40ss%2Fword@127.0.0.1:5432/db"

    masked = mask_url(url)

    assert masked == "postgresql+psycopg://user:***@127.0.0.1:5432/db"
    assert "p@ss" not in masked
    assert "%40" not in masked


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("notaurl", "notaurl"),
        (
            "postgresql+psycopg://u:top@s3cret@127.0.0.1:1/x",
            "postgresql+psycopg://***@127.0.0.1:1/x",
        ),
        (
            "postgresql+psycopg://u:s3cret@127.0.0.1:badport/x",
            "postgresql+psycopg://***@127.0.0.1:badport/x",
        ),
        (
            "postgresql+psycopg://u:s3cret@127.0.0.1/x",
            "postgresql+psycopg://u:***@127.0.0.1/x",
        ),
    ],
)
def test_mask_url_hides_password(url, shown):
    from search.storage import mask_url

    assert mask_url(url) == shown
