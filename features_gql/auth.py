"""Who may do what: bearer tokens with scopes, decided once at the edge for every way in.

A token is a random secret; the configuration keeps only its SHA-256, under the token's
name, which the change log records as the actor of its changes. Scopes:

``read``
    queries (and every later read protocol)
``write``
    mutations
``admin``
    the operator's endpoints (fault injection, and whatever later operates the service)

A request without a token acts as ``anonymous``, with the scopes of the ``anonymous``
setting. With no tokens configured, anonymous requests may read and write, which the
service accepts only while it listens on loopback (see :func:`check_exposure`).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from features_gql.errors import ConfigError, FeaturesError

Scope = Literal["read", "write", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "write", "admin")

#: What a request without a token may do, by the value of ``[auth] anonymous``.
ANONYMOUS_LEVELS: dict[str, frozenset[str]] = {
    "none": frozenset(),
    "read": frozenset({"read"}),
    "write": frozenset({"read", "write"}),
}
ANONYMOUS = "anonymous"
#: The name under which ``FEATURES_GQL_ADMIN_TOKEN`` acts.
ADMIN_TOKEN_NAME = "admin"
TOKEN_PREFIX = "fgql_"

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")


class Unauthenticated(FeaturesError):
    """The request carries no usable credentials where some are needed."""

    code = "UNAUTHENTICATED"


def digest(secret: str) -> bytes:
    """The SHA-256 of a secret as sent by a client. Never raises, whatever the bytes."""
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a token's name and scopes, or ``anonymous``."""

    name: str
    scopes: frozenset[str]
    anonymous: bool = False

    def can(self, scope: str) -> bool:
        return scope in self.scopes


@dataclass(frozen=True, slots=True)
class Token:
    """A configured token: its name, its scopes and the SHA-256 of its secret."""

    name: str
    scopes: frozenset[str]
    sha256: bytes = field(repr=False)

    @classmethod
    def from_config(cls, name: str, scopes: Iterable[object], sha256: str) -> Token:
        where = f"[auth.tokens.{name}]"
        if _NAME.fullmatch(name) is None:
            raise ConfigError(
                f"{where}: a token name must be 1-64 characters of a-z, 0-9, '-' and '_', "
                "starting with a letter or digit"
            )
        if name == ANONYMOUS:
            raise ConfigError(f"{where}: {ANONYMOUS!r} is reserved for requests without a token")
        given = list(scopes)
        unknown = [s for s in given if s not in SCOPES]
        if unknown or not given:
            raise ConfigError(
                f"{where}: scopes must be a non-empty list of {', '.join(SCOPES)} (got {given!r})"
            )
        if _HEX_SHA256.fullmatch(sha256.lower()) is None:
            raise ConfigError(
                f"{where}: sha256 must be the 64 hex digits of the secret's SHA-256 "
                "(features-gql token create prints it)"
            )
        return cls(name, frozenset(str(s) for s in given), bytes.fromhex(sha256))


@dataclass(frozen=True)
class AuthPolicy:
    """Turns an ``Authorization`` header into a :class:`Principal`, or refuses it."""

    tokens: tuple[Token, ...] = ()
    anonymous: frozenset[str] = ANONYMOUS_LEVELS["write"]
    #: The scope ``/metrics`` needs, or None when it is open (the Prometheus convention).
    metrics_scope: str | None = None

    @classmethod
    def open(cls) -> AuthPolicy:
        """Anonymous reads and writes: for an application that embeds the API and guards
        its own routes, and for a service on loopback with no tokens configured."""
        return cls()

    @functools.cached_property
    def anonymous_principal(self) -> Principal:
        # Cached on the policy (a plain attribute read after the first): asked by every
        # request that sends no token.
        return _anonymous(self.anonymous)

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal for an ``Authorization`` header value (None when absent).

        Raises :class:`Unauthenticated` for a header that is not a known bearer token:
        a wrong token is reported as wrong, never silently downgraded to anonymous.
        """
        if authorization is None:
            return self.anonymous_principal
        scheme, _, secret = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise Unauthenticated("Send Authorization: Bearer <token>.")
        given = digest(secret.strip())
        found: Token | None = None
        # Every configured token is compared, in constant time, whichever matches.
        for token in self.tokens:
            if hmac.compare_digest(given, token.sha256):
                found = token
        if found is None:
            raise Unauthenticated("The bearer token is not known to this service.")
        return Principal(found.name, found.scopes)

    def require(self, principal: Principal, scope: str) -> None:
        """Raise :class:`Unauthenticated` when an anonymous principal lacks ``scope``.

        A token that lacks a scope is not unauthenticated but forbidden; each way in
        answers that in its own terms (a GraphQL error per field, a 403).
        """
        if principal.anonymous and not principal.can(scope):
            raise Unauthenticated(
                f"This needs the {scope!r} scope: send Authorization: Bearer <token>."
            )


@functools.lru_cache(maxsize=8)
def _anonymous(scopes: frozenset[str]) -> Principal:
    return Principal(ANONYMOUS, scopes, anonymous=True)


def build_policy(
    tokens: Mapping[str, Mapping[str, object]],
    *,
    anonymous: str | None,
    admin_token: str | None = None,
    metrics: str = "open",
) -> AuthPolicy:
    """The policy of a ``[auth]`` table (already type-checked) and the admin token."""
    built = [
        Token.from_config(name, _list(entry.get("scopes"), name), str(entry.get("sha256", "")))
        for name, entry in tokens.items()
    ]
    if admin_token:
        built.append(Token(ADMIN_TOKEN_NAME, frozenset({"admin"}), digest(admin_token)))
    level = anonymous if anonymous is not None else ("none" if tokens else "write")
    if level not in ANONYMOUS_LEVELS:
        raise ConfigError(
            f"[auth] anonymous must be one of {', '.join(ANONYMOUS_LEVELS)} (got {level!r})"
        )
    if metrics != "open" and metrics not in SCOPES:
        raise ConfigError(
            f'[auth] metrics must be "open" or a scope: {", ".join(SCOPES)} (got {metrics!r})'
        )
    return AuthPolicy(
        tokens=tuple(built),
        anonymous=ANONYMOUS_LEVELS[level],
        metrics_scope=None if metrics == "open" else metrics,
    )


def _list(value: object, name: str) -> list[object]:
    if not isinstance(value, list):
        raise ConfigError(f'[auth.tokens.{name}]: scopes must be a list, e.g. ["read"]')
    return value


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, *, tokens: bool, anonymous: str | None) -> None:
    """Refuse to serve anonymous writes beyond loopback unless that was asked for."""
    if tokens or anonymous is not None or is_loopback(host):
        return
    raise ConfigError(
        f"refusing to listen on {host} with no tokens: anyone who can reach it could change "
        "flags. Create one with `features-gql token create NAME --scopes read,write` and "
        'add it under [auth.tokens], or set [auth] anonymous = "write" to allow it'
    )


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_table(name: str, scopes: Iterable[str], secret: str) -> str:
    """The TOML table to paste for a token, holding only the secret's hash."""
    listed = ", ".join(f'"{s}"' for s in scopes)
    return (
        f"[auth.tokens.{name}]\nscopes = [{listed}]\n"
        f'sha256 = "{hashlib.sha256(secret.encode()).hexdigest()}"\n'
    )
