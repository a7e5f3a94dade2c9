"""The user authenticator and the error boundary for every RPC kind, on a real gRPC
server against real PostgreSQL memberships."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_status import rpc_status

from tests.api_support import ApiUser, bad_tokens, make_user, user_token
from trace_platform.adapters.postgres.identity_repository import IdentityRepository
from trace_platform.adapters.postgres.pool import create_pool
from trace_platform.core.config import Settings
from trace_platform.core.errors import NotFound
from trace_platform.servers.api.identity import Principal, Role, build_user_authenticator
from trace_platform.servers.common.errors import ErrorMappingInterceptor

SERVICE = "trace.test.Probe"
Req = health_pb2.HealthCheckRequest
Resp = health_pb2.HealthCheckResponse


def _reason(err: grpc.aio.AioRpcError) -> str:
    from google.rpc import error_details_pb2

    status = rpc_status.from_call(err)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    return info.reason


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    assert settings.database_url
    p = await create_pool(settings.database_url, 1, 4)
    yield p
    await p.close()


@pytest.fixture
async def probe(pool: asyncpg.Pool, settings: Settings) -> AsyncIterator[grpc.aio.Channel]:
    """A server whose four methods, one per RPC kind, authenticate then answer with the
    principal (``service`` = "org/user/role"); a request naming "missing" raises NotFound."""
    auth = build_user_authenticator(pool, settings.user_auth)

    def say(p: Principal) -> Resp:
        return Resp(status=Resp.SERVING if p.role == Role.ADMIN else Resp.NOT_SERVING)

    async def unary(req: Req, ctx: grpc.aio.ServicerContext) -> Resp:
        p = await auth.authenticate(ctx, Role.EDITOR)
        if req.service == "missing":
            raise NotFound("THING_NOT_FOUND", "no such thing")
        return say(p)

    async def server_stream(req: Req, ctx: grpc.aio.ServicerContext) -> AsyncIterator[Resp]:
        p = await auth.authenticate(ctx, Role.VIEWER)
        yield say(p)
        raise NotFound("THING_NOT_FOUND", "no such thing")

    async def client_stream(reqs: AsyncIterator[Req], ctx: grpc.aio.ServicerContext) -> Resp:
        p = await auth.authenticate(ctx, Role.VIEWER)
        async for req in reqs:
            if req.service == "missing":
                raise NotFound("THING_NOT_FOUND", "no such thing")
        return say(p)

    async def bidi(reqs: AsyncIterator[Req], ctx: grpc.aio.ServicerContext) -> AsyncIterator[Resp]:
        p = await auth.authenticate(ctx, Role.VIEWER)
        async for req in reqs:
            if req.service == "missing":
                raise NotFound("THING_NOT_FOUND", "no such thing")
            yield say(p)

    handlers: dict[str, Any] = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary, Req.FromString, Resp.SerializeToString),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream, Req.FromString, Resp.SerializeToString),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream, Req.FromString, Resp.SerializeToString),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi, Req.FromString, Resp.SerializeToString),
    }
    server = grpc.aio.server(interceptors=[ErrorMappingInterceptor()])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield ch
    await server.stop(0.2)


def _unary(ch: grpc.aio.Channel) -> Any:
    return ch.unary_unary(f"/{SERVICE}/Unary", Req.SerializeToString, Resp.FromString)


async def _all_kinds(ch: grpc.aio.Channel, md: list[tuple[str, str]] | None, service: str = "") -> list[Any]:
    """Call each kind once; the result or the error of each."""
    out: list[Any] = []

    async def reqs() -> AsyncIterator[Req]:
        yield Req(service=service)

    calls = [
        lambda: _unary(ch)(Req(service=service), metadata=md),
        lambda: _collect(
            ch.unary_stream(f"/{SERVICE}/ServerStream", Req.SerializeToString, Resp.FromString)(
                Req(service=service), metadata=md
            )
        ),
        lambda: ch.stream_unary(f"/{SERVICE}/ClientStream", Req.SerializeToString, Resp.FromString)(
            reqs(), metadata=md
        ),
        lambda: _collect(
            ch.stream_stream(f"/{SERVICE}/Bidi", Req.SerializeToString, Resp.FromString)(reqs(), metadata=md)
        ),
    ]
    for call in calls:
        try:
            out.append(await call())
        except grpc.aio.AioRpcError as err:
            out.append(err)
    return out


async def _collect(call: Any) -> list[Any]:
    return [m async for m in call]


async def test_a_member_is_authenticated_with_their_role(
    probe: grpc.aio.Channel, pool: asyncpg.Pool, settings: Settings
) -> None:
    admin = await make_user(pool, settings, "admin")
    resp = await _unary(probe)(Req(), metadata=admin.metadata)
    assert resp.status == Resp.SERVING


async def test_every_bad_credential_is_unauthenticated_on_every_rpc_kind(
    probe: grpc.aio.Channel, pool: asyncpg.Pool, settings: Settings
) -> None:
    user = await make_user(pool, settings, "admin")
    for name, token in bad_tokens(settings, user).items():
        md = None if token is None else [("authorization", f"Bearer {token}")]
        for result in await _all_kinds(probe, md):
            assert isinstance(result, grpc.aio.AioRpcError), name
            assert result.code() == grpc.StatusCode.UNAUTHENTICATED, (name, result.details())
            assert _reason(result).startswith("USER_TOKEN"), name


async def test_roles_are_ordered_and_a_weaker_one_is_refused(
    probe: grpc.aio.Channel, pool: asyncpg.Pool, settings: Settings
) -> None:
    viewer = await make_user(pool, settings, "viewer")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _unary(probe)(Req(), metadata=viewer.metadata)  # Unary needs editor
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED and _reason(err.value) == "ROLE_REQUIRED"
    editor = await make_user(pool, settings, "editor")
    assert (await _unary(probe)(Req(), metadata=editor.metadata)).status == Resp.NOT_SERVING


async def test_identity_comes_from_the_membership_not_the_token_alone(
    probe: grpc.aio.Channel, pool: asyncpg.Pool, settings: Settings
) -> None:
    admin = await make_user(pool, settings, "admin")
    other = await make_user(pool, settings, "admin")
    # A valid signature for a subject that exists, but claiming an org it is not a member of.
    forged_org = ApiUser(other.org_id, admin.user_id, admin.subject, user_token(settings, admin.subject, other.org_id))
    # And a subject nobody registered.
    stranger = user_token(settings, "nobody", admin.org_id)
    for md in (forged_org.metadata, [("authorization", f"Bearer {stranger}")]):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _unary(probe)(Req(), metadata=md)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED and _reason(err.value) == "NOT_A_MEMBER"
    # Other metadata never names a user: an x-trace-user header changes nothing.
    with pytest.raises(grpc.aio.AioRpcError):
        await _unary(probe)(Req(), metadata=[("x-trace-user", admin.subject), ("x-trace-org", admin.org_id)])
    # A membership removed is refused at the next call (nothing cached).
    await IdentityRepository(pool).remove_member(admin.org_id, admin.user_id)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _unary(probe)(Req(), metadata=admin.metadata)
    assert _reason(err.value) == "NOT_A_MEMBER"


async def test_domain_errors_and_bad_input_map_on_every_rpc_kind(
    probe: grpc.aio.Channel, pool: asyncpg.Pool, settings: Settings
) -> None:
    admin = await make_user(pool, settings, "admin")
    for result in await _all_kinds(probe, admin.metadata, service="missing"):
        assert isinstance(result, grpc.aio.AioRpcError)
        assert result.code() == grpc.StatusCode.NOT_FOUND and _reason(result) == "THING_NOT_FOUND"
    # A NUL in a string field of any message of a stream is the caller's input error.
    for result in await _all_kinds(probe, admin.metadata, service="a\x00b"):
        assert isinstance(result, grpc.aio.AioRpcError)
        assert result.code() == grpc.StatusCode.INVALID_ARGUMENT, result.details()
