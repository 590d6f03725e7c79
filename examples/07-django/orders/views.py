"""Place an order (and ship it on commit), read one back."""

from django.db import transaction
from django.db.models import F
from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from orders.models import Order, Stock
from orders.tasks import ship_order


class OutOfStock(Exception):
    pass


@csrf_exempt  # an API for the example's client; a form in a real project keeps CSRF protection
@require_POST
def place_order(request: HttpRequest) -> JsonResponse:
    item = request.POST["item"]
    quantity = int(request.POST["quantity"])
    try:
        with transaction.atomic():
            order = Order.objects.create(item=item, quantity=quantity)
            # Sent when the transaction commits; dropped with the order if it rolls back.
            ship_order.delay_on_commit(order.pk)
            reserve(item, quantity)
    except OutOfStock as exc:
        return JsonResponse({"error": str(exc)}, status=409)
    return JsonResponse({"order": order.pk}, status=201)


def reserve(item: str, quantity: int) -> None:
    """Take ``quantity`` of ``item`` from the stock, or raise ``OutOfStock`` (which rolls the order back)."""
    taken = Stock.objects.filter(item=item, available__gte=quantity).update(available=F("available") - quantity)
    if not taken:
        left = Stock.objects.filter(item=item).values_list("available", flat=True).first() or 0
        raise OutOfStock(f"only {left} {item} in stock")


@require_GET
def order_status(request: HttpRequest, order_id: int) -> JsonResponse:
    order = get_object_or_404(Order, pk=order_id)
    return JsonResponse({"order": order.pk, "item": order.item, "quantity": order.quantity, "status": order.status})
