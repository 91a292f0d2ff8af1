"""Registered webhook endpoints (up to ``webhooks.max_endpoints`` an owner) and the signing secret of requests'
own ``webhook_url``."""

from __future__ import annotations

import time

from fastapi import APIRouter, Response

from pocket3d.api.deps import NodeDep, PrincipalDep
from pocket3d.api.schemas import (
    ErrorBody,
    WebhookEndpointCreate,
    WebhookEndpointCreated,
    WebhookEndpointList,
    WebhookEndpointView,
    WebhookSecret,
    iso,
)
from pocket3d.api.keys import Principal
from pocket3d.errors import ErrorCode, Pocket3DError
from pocket3d.jobs import outbox
from pocket3d.jobs.records import WebhookEndpoint
from pocket3d.node import Node

router = APIRouter(prefix="/webhooks", tags=["Webhooks"])
ERRORS = {401: {"model": ErrorBody}}


def _view(e: WebhookEndpoint) -> WebhookEndpointView:
    return WebhookEndpointView(id=e.id, url=e.url, events=e.events, description=e.description,
                               created_at=iso(e.created_at))


def _own_endpoint(node: Node, principal: Principal, endpoint_id: str) -> WebhookEndpoint:
    found = outbox.get_endpoint(node.store, endpoint_id)
    if found is None or found.owner_id != principal.owner_id:
        raise Pocket3DError(ErrorCode.WEBHOOK_NOT_FOUND, f"webhook endpoint {endpoint_id} not found",
                            {"endpoint_id": endpoint_id})
    return found


@router.post("", status_code=201, response_model=WebhookEndpointCreated, summary="Register a webhook endpoint",
             responses={**ERRORS, 409: {"model": ErrorBody}, 422: {"model": ErrorBody}},
             description="Deliveries of the chosen events of your jobs go to this URL, signed with the secret in "
                         "this answer (it is not shown again). A URL that resolves to a loopback, private, "
                         "link-local or cloud-metadata address is refused (422 WEBHOOK_URL_FORBIDDEN).")
def create_webhook(body: WebhookEndpointCreate, node: NodeDep, principal: PrincipalDep) -> WebhookEndpointCreated:
    node.webhooks.check_url(body.url)
    endpoint, secret = outbox.create_endpoint(node.store, owner_id=principal.owner_id, url=body.url,
                                              events=body.events, description=body.description,
                                              max_endpoints=node.settings.webhooks.max_endpoints, now=time.time())
    return WebhookEndpointCreated(**_view(endpoint).model_dump(), secret=secret)


@router.get("", response_model=WebhookEndpointList, responses=ERRORS, summary="Your webhook endpoints")
def list_webhooks(node: NodeDep, principal: PrincipalDep) -> WebhookEndpointList:
    return WebhookEndpointList(endpoints=[_view(e) for e in outbox.list_endpoints(node.store, principal.owner_id)])


@router.get("/secret", response_model=WebhookSecret, responses=ERRORS,
            summary="The secret that signs deliveries to your requests' webhook_url",
            description="Made on first use; the same for every request of yours. Registered endpoints have a "
                        "secret each, shown when they are created.")
def webhook_secret(node: NodeDep, principal: PrincipalDep) -> WebhookSecret:
    return WebhookSecret(secret=outbox.owner_secret(node.store, principal.owner_id, now=time.time()))


@router.get("/{endpoint_id}", response_model=WebhookEndpointView, responses={**ERRORS, 404: {"model": ErrorBody}},
            summary="One webhook endpoint")
def get_webhook(endpoint_id: str, node: NodeDep, principal: PrincipalDep) -> WebhookEndpointView:
    return _view(_own_endpoint(node, principal, endpoint_id))


@router.delete("/{endpoint_id}", status_code=204, response_class=Response,
               responses={**ERRORS, 404: {"model": ErrorBody}},
               summary="Delete a webhook endpoint; what was still to be sent to it is dropped")
def delete_webhook(endpoint_id: str, node: NodeDep, principal: PrincipalDep) -> Response:
    _own_endpoint(node, principal, endpoint_id)
    outbox.delete_endpoint(node.store, endpoint_id, now=time.time())
    return Response(status_code=204)
