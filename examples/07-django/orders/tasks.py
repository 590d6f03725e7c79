"""The shop's tasks: found by ``app.autodiscover_tasks()``, since ``orders`` is in INSTALLED_APPS."""

from django.utils import timezone
from proj.taskfleet import app

from orders.models import Order


@app.task
def ship_order(order_id: int) -> str:
    """Runs on a worker once the view's transaction has committed, so the order is there to read."""
    order = Order.objects.get(pk=order_id)
    order.status = Order.Status.SHIPPED
    order.shipped_at = timezone.now()
    order.save(update_fields=["status", "shipped_at"])
    return order.status
