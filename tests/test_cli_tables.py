"""Tables for people: never cut when the output goes to a pipe or a file (ids must stay copyable)."""

from perovskite_pes.cli._tables import print_table


def test_piped_tables_keep_long_ids_whole(capsys):
    long_id = "6b108fcee2c6720070110ef4" * 4
    print_table("models", ["id", "name"], [[long_id, "quickstart-sevennet"], [None, "x"]])
    out = capsys.readouterr().out
    assert long_id in out and "quickstart-sevennet" in out
    assert max(len(line) for line in out.splitlines()) < 200  # sized by content, not padded to the pipe width
