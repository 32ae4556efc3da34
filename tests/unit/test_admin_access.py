"""Access, RoleAuth and AdminGate on a small app of their own, with a fake verifier."""

from typing import Annotated

import httpx
from fastapi import Depends, FastAPI

from app.application.errors import InvalidToken
from app.domain.access import Actor, Identity, Role, StaticToken
from app.presentation.api.auth import Access, AdminGate

JWT = "header.claims.signature"


class CountingVerifier:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, token: str) -> Identity:
        self.calls += 1
        if token != JWT:
            raise InvalidToken("not ours")
        return Identity("alice", Role.OPERATOR, "https://idp.example")


def small_app(verifier: CountingVerifier) -> FastAPI:
    access = Access([StaticToken("oncall", Role.READER, "r" * 32)], verifier)
    app = FastAPI()

    @app.post("/change")
    async def change(actor: Annotated[Actor, Depends(access.operator)]) -> dict[str, object]:
        return {"name": actor.name, "issuer": actor.issuer, "address": actor.address}

    app.add_middleware(AdminGate, routes=app.routes)
    return app


async def post(app: FastAPI, token: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, client=("192.0.2.9", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.post("/change", headers={"Authorization": f"Bearer {token}"})


async def test_a_jwt_is_verified_once_per_request_and_names_the_actor() -> None:
    verifier = CountingVerifier()
    response = await post(small_app(verifier), JWT)
    assert response.json() == {
        "name": "alice",
        "issuer": "https://idp.example",
        "address": "192.0.2.9",
    }
    assert verifier.calls == 1


async def test_a_static_token_never_reaches_the_verifier() -> None:
    verifier = CountingVerifier()
    response = await post(small_app(verifier), "r" * 32)
    assert (response.status_code, response.json()["code"]) == (403, "forbidden-role")
    assert verifier.calls == 0


async def test_an_unknown_dotted_token_is_401_and_another_one_403() -> None:
    verifier = CountingVerifier()
    app = small_app(verifier)
    assert (await post(app, "a.b.c")).json()["code"] == "invalid-token"
    assert (await post(app, "no-dots-here")).json()["code"] == "forbidden"
