"""Place two orders through the shop's views, as a browser would (Django's test client, no server needed):
``python send.py``, with ``taskfleet worker -A proj`` running in this directory."""

import logging
import os
import time
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
django.setup()

from django.test import Client  # noqa: E402  (after django.setup())
from orders.models import Stock  # noqa: E402

from taskfleet import signals  # noqa: E402

TIMEOUT_S = 20.0
published: list[str] = []


@signals.after_task_publish.connect
def count(sender: str, **kwargs: Any) -> None:
    published.append(sender)


def show(call: str, outcome: str) -> None:
    print(f"{call:<37}-> {outcome}")


def wait_for_status(client: Client, order_id: int, status: str) -> str:
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        current: str = client.get(f"/orders/{order_id}/").json()["status"]
        if current == status or time.monotonic() > deadline:
            return current
        time.sleep(0.05)


def main() -> None:
    logging.getLogger("django.request").setLevel(logging.ERROR)  # the 409 below is expected: no warning for it
    Stock.objects.update_or_create(item="tea", defaults={"available": 10})  # a full shelf for each run
    client = Client()

    placed = client.post("/orders/", {"item": "tea", "quantity": 2})
    show("POST /orders/ item=tea quantity=2", f"{placed.status_code}: order saved, ship_order sent on commit")
    status = wait_for_status(client, placed.json()["order"], "shipped")
    show("GET /orders/<id>/", f"{status!r} (the worker saved it through the ORM)" if status == "shipped" else
         f"still {status!r} after {TIMEOUT_S:.0f} s: is `taskfleet worker -A proj` running here?")

    refused = client.post("/orders/", {"item": "tea", "quantity": 50})
    show("POST /orders/ item=tea quantity=50", f"{refused.status_code} {refused.json()['error']}: rolled back, "
         "ship_order not sent")
    show("messages sent by this process", f"{len(published)} ({', '.join(published)})")


if __name__ == "__main__":
    main()
