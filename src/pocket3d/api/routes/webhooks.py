"""Registered webhook endpoints (up to ``webhooks.max_endpoints`` an owner) and the signing secret of requests'
own ``webhook_url``."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Body, Path, Response

from pocket3d.api import examples
from pocket3d.api.deps import NodeDep, PrincipalDep
from pocket3d.api.keys import Principal
from pocket3d.api.openapi import error_responses
from pocket3d.api.schemas import (
    WebhookEndpointCreate,
    WebhookEndpointCreated,
    WebhookEndpointList,
    WebhookEndpointView,
    WebhookSecret,
    iso,
)
from pocket3d.errors import ErrorCode, Pocket3DError
from pocket3d.jobs import outbox
from pocket3d.jobs.records import WebhookEndpoint
from pocket3d.node import Node

router = APIRouter(prefix="/webhooks", tags=["Webhooks"])
EndpointIdPath = Annotated[str, Path(description="the id its registration answered",
                                     examples=["whk_01JD8X6P2R4S6T8V0W2Y4A6C8E"])]


def _view(e: WebhookEndpoint) -> WebhookEndpointView:
    return WebhookEndpointView(id=e.id, url=e.url, events=e.events, description=e.description,
                               created_at=iso(e.created_at))


def _own_endpoint(node: Node, principal: Principal, endpoint_id: str) -> WebhookEndpoint:
    found = outbox.get_endpoint(node.store, endpoint_id)
    if found is None or found.owner_id != principal.owner_id:
        raise Pocket3DError(ErrorCode.WEBHOOK_NOT_FOUND, f"webhook endpoint {endpoint_id} not found",
                            {"endpoint_id": endpoint_id}, hint="GET /api/v1/webhooks lists your endpoints")
    return found


@router.post("", status_code=201, response_model=WebhookEndpointCreated, responses=error_responses(401, 409, 422),
             operation_id="createWebhook", summary="Register a webhook endpoint")
def create_webhook(body: Annotated[WebhookEndpointCreate, Body(openapi_examples=examples.webhook_endpoint())],
                   node: NodeDep, principal: PrincipalDep) -> WebhookEndpointCreated:
    """Deliveries of the chosen events of all your jobs go to this URL, signed by the Standard Webhooks scheme
    (headers `webhook-id`, `webhook-timestamp`, `webhook-signature`) with the `secret` in this answer: keep it,
    it is not shown again. A URL whose host resolves to a loopback, private, link-local or cloud-metadata address
    is refused with 422 `WEBHOOK_URL_FORBIDDEN` (unless the operator lists it in `webhooks.allow_hosts`); more
    than `webhooks.max_endpoints` (5) endpoints answer 409 `WEBHOOK_LIMIT_REACHED`."""
    node.webhooks.check_url(body.url)
    endpoint, secret = outbox.create_endpoint(node.store, owner_id=principal.owner_id, url=body.url,
                                              events=body.events, description=body.description,
                                              max_endpoints=node.settings.webhooks.max_endpoints, now=time.time())
    return WebhookEndpointCreated(**_view(endpoint).model_dump(), secret=secret)


@router.get("", response_model=WebhookEndpointList, responses=error_responses(401), operation_id="listWebhooks",
            summary="Your webhook endpoints")
def list_webhooks(node: NodeDep, principal: PrincipalDep) -> WebhookEndpointList:
    """Your registered endpoints, oldest first, without their secrets."""
    return WebhookEndpointList(endpoints=[_view(e) for e in outbox.list_endpoints(node.store, principal.owner_id)])


@router.get("/secret", response_model=WebhookSecret, responses=error_responses(401), operation_id="getWebhookSecret",
            summary="The secret that signs deliveries to your requests' webhook_url")
def webhook_secret(node: NodeDep, principal: PrincipalDep) -> WebhookSecret:
    """A request may carry `webhook_url` (and `webhook_events`); what goes there is signed with this secret,
    the same for every request of yours (made on first use). Verify with any Standard Webhooks library, e.g.
    `standardwebhooks.Webhook(secret).verify(body, headers)`. Registered endpoints have a secret each."""
    return WebhookSecret(secret=outbox.owner_secret(node.store, principal.owner_id, now=time.time()))


@router.get("/{endpoint_id}", response_model=WebhookEndpointView, responses=error_responses(401, 404),
            operation_id="getWebhook", summary="One webhook endpoint")
def get_webhook(endpoint_id: EndpointIdPath, node: NodeDep, principal: PrincipalDep) -> WebhookEndpointView:
    """The endpoint's URL, events and description (not its secret)."""
    return _view(_own_endpoint(node, principal, endpoint_id))


@router.delete("/{endpoint_id}", status_code=204, response_class=Response, responses=error_responses(401, 404),
               operation_id="deleteWebhook", summary="Delete a webhook endpoint")
def delete_webhook(endpoint_id: EndpointIdPath, node: NodeDep, principal: PrincipalDep) -> Response:
    """Nothing more goes to it; deliveries to it not yet made are marked failed."""
    _own_endpoint(node, principal, endpoint_id)
    outbox.delete_endpoint(node.store, endpoint_id, now=time.time())
    return Response(status_code=204)
