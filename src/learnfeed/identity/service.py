"""identity's gRPC handlers (thin) and its composition root."""

from __future__ import annotations

import time
import uuid
from typing import Any

from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from cellwork import Service, ServiceSettings, Unauthenticated
from cellwork.gateway import JwtCodec
from learnfeed.identity import domain
from learnfeed.identity.hashing import HashingPool
from learnfeed.identity.store import MIGRATIONS, IdentityStore, User
from learnfeed.retention import Prune
from learnfeed.settings import LearnfeedSettings
from learnfeed.v1 import identity_pb2 as pb
from learnfeed.v1 import identity_pb2_grpc as rpc

SERVICE_NAME = "identity"
PROTO_NAME = "learnfeed.v1.Identity"


class IdentityServicer(rpc.IdentityServicer):
    """Sign-up, login, token rotation, profiles and follows."""

    def __init__(
        self,
        store: IdentityStore,
        jwt: JwtCodec,
        refresh_ttl: int,
        hashing: HashingPool | None = None,
    ) -> None:
        self.store = store
        self.jwt = jwt
        self.refresh_ttl = refresh_ttl
        self.hasher = domain.password_hasher()
        # A thread per core; sign-ups and logins it cannot take in time get Overloaded.
        self.hashing = hashing or HashingPool()
        # A hash for unknown emails, so a wrong email costs as long as a wrong password.
        self._decoy = self.hasher.hash("decoy-password")

    async def close(self) -> None:
        """Stop the hashing threads (after in-flight calls have finished)."""
        self.hashing.close()

    async def _tokens(self, user_id: str, family: str | None = None) -> pb.TokenPair:
        refresh = domain.new_refresh_token()
        await self.store.add_refresh_token(
            domain.hash_refresh_token(refresh),
            user_id,
            family or uuid.uuid4().hex,
            time.time() + self.refresh_ttl,
        )
        return self._pair(user_id, refresh)

    def _pair(self, user_id: str, refresh: str) -> pb.TokenPair:
        """A fresh access token for ``user_id`` with the refresh token just stored."""
        return pb.TokenPair(
            user_id=user_id,
            access_token=self.jwt.issue(user_id),
            refresh_token=refresh,
            expires_in=self.jwt.ttl,
        )

    async def SignUp(self, request: pb.SignUpRequest, context: Any) -> pb.TokenPair:
        email = domain.normalize_email(request.email)
        password = domain.check_password(request.password)
        name = domain.check_name(request.name)
        password_hash = await self.hashing.run(self.hasher.hash, password)
        user = User(domain.new_user_id(), email, name, password_hash, time.time())
        await self.store.create_user(user)
        return await self._tokens(user.id)

    async def Login(self, request: pb.LoginRequest, context: Any) -> pb.TokenPair:
        try:
            email = domain.normalize_email(request.email)
        except Exception:
            raise Unauthenticated("wrong email or password") from None
        user = await self.store.user_by_email(email)
        try:
            await self.hashing.run(
                self.hasher.verify, user.password_hash if user else self._decoy, request.password
            )
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            raise Unauthenticated("wrong email or password") from None
        if user is None:
            raise Unauthenticated("wrong email or password")
        if self.hasher.check_needs_rehash(user.password_hash):
            new_hash = await self.hashing.run(self.hasher.hash, request.password)
            await self.store.update_password_hash(user.id, new_hash)
        return await self._tokens(user.id)

    async def Refresh(self, request: pb.RefreshRequest, context: Any) -> pb.TokenPair:
        if not request.refresh_token:
            raise Unauthenticated("missing refresh token")
        refresh = domain.new_refresh_token()
        user_id = await self.store.rotate_refresh_token(
            domain.hash_refresh_token(request.refresh_token),
            domain.hash_refresh_token(refresh),
            time.time() + self.refresh_ttl,
        )
        return self._pair(user_id, refresh)

    async def GetProfile(self, request: pb.GetProfileRequest, context: Any) -> pb.Profile:
        user = await self.store.user_by_id(request.user_id)
        follows = await self.store.follows(user.id)
        return pb.Profile(
            user_id=user.id,
            email=user.email,
            name=user.name,
            created_at=user.created_at,
            following_count=len(follows),
        )

    async def Follow(self, request: pb.FollowRequest, context: Any) -> pb.FollowResponse:
        changed = await self.store.follow(request.user_id, request.educator_id)
        return pb.FollowResponse(changed=changed)

    async def Unfollow(self, request: pb.FollowRequest, context: Any) -> pb.FollowResponse:
        changed = await self.store.unfollow(request.user_id, request.educator_id)
        return pb.FollowResponse(changed=changed)

    async def ListFollows(
        self, request: pb.ListFollowsRequest, context: Any
    ) -> pb.ListFollowsResponse:
        return pb.ListFollowsResponse(educator_ids=await self.store.follows(request.user_id))


def create_service(settings: ServiceSettings) -> Service:
    """Composition root: the database, the token codec, the servicer."""
    cfg = LearnfeedSettings.of(settings)
    service = Service(SERVICE_NAME, cfg)
    engine = service.add_database(cfg.database(service.name), MIGRATIONS)
    servicer = IdentityServicer(IdentityStore(engine), cfg.jwt(), cfg.refresh_token_ttl)
    service.add_grpc(rpc.add_IdentityServicer_to_server, servicer, PROTO_NAME)
    service.background(
        Prune(
            "refresh_tokens",
            servicer.store.prune_refresh_tokens,
            keep=cfg.refresh_token_retention,
            interval=cfg.retention_interval,
        )
    )
    service.on_stop(servicer.close)
    return service
