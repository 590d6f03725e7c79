"""01 quickstart: an App and its tasks. `taskfleet worker -A tasks:app` runs them; send.py calls them."""

from __future__ import annotations

from collections import Counter

from taskfleet import App

#: The embedded SQLite broker: one file in the working directory, also the result backend. `taskfleet worker` and
#: send.py use TASKFLEET_BROKER_URL (and TASKFLEET_RESULT_BACKEND) instead when they are set, e.g.
#: redis://127.0.0.1:6379/0.
LOCAL_DB = "sqlite:///taskfleet.db"

app = App("quickstart", broker=LOCAL_DB, result_backend=LOCAL_DB)


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def top_words(text: str, n: int = 3) -> list[list[object]]:
    """The ``n`` most common words of ``text`` with their counts (JSON has no tuples: pairs come back as lists)."""
    counted = Counter(word.strip(".,!?").lower() for word in text.split())
    return [[word, count] for word, count in counted.most_common(n)]
