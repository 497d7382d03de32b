"""The model as users get it: published to MLflow's registry, served, and read by predict."""


def cut(text: str, limit: int = 200) -> str:
    """`text` on one line and at most about `limit` characters, saying its full length when
    cut: an error line or reply may quote what a user gave (a path, a key), of any size.

    Here, not in errors.py, which every DVC stage depends on: only serving quotes such input.
    """
    line = text.replace("\n", "\\n").replace("\r", "\\r")
    return line if len(line) <= limit else f"{line[:limit]}... ({len(line):,} characters)"
