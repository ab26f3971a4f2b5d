"""Claims-based security: verify the SAS tokens the SDK sends with ``put-token`` on the ``$cbs`` node."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, quote_plus

__all__ = ["SasVerifier"]


@dataclass(frozen=True)
class SasVerifier:
    """Checks ``SharedAccessSignature sr=..&sig=..&se=..&skn=..`` tokens against one named key.

    The key is kept out of ``repr`` so it never ends up in logs or assertion messages.
    """

    key_name: str
    key: str = field(repr=False)

    def verify(self, token: str, now: float | None = None) -> tuple[bool, str]:
        """Return (valid, reason); the reason is safe to send back to the client (it holds no secret)."""
        prefix = "SharedAccessSignature "
        if not token.startswith(prefix):
            return False, "token is not a SharedAccessSignature"
        fields = {name: values[0] for name, values in parse_qs(token[len(prefix) :], keep_blank_values=True).items()}
        resource, signature, expiry, key_name = (fields.get(k) for k in ("sr", "sig", "se", "skn"))
        if not resource or not signature or not expiry:
            return False, "token lacks sr, sig or se"
        if key_name != self.key_name:
            return False, "unknown SharedAccessKeyName"
        try:
            expires_at = int(expiry)
        except ValueError:
            return False, "se is not an integer"
        if expires_at < (time.time() if now is None else now):
            return False, "token has expired"
        # The SDK signs the url-encoded resource and the expiry, exactly as generate_sas_token does.
        to_sign = f"{quote_plus(resource)}\n{expires_at}".encode()
        expected = base64.b64encode(hmac.new(self.key.encode(), to_sign, hashlib.sha256).digest()).decode()
        if not hmac.compare_digest(expected, signature):
            return False, "signature does not match the shared access key"
        return True, "Welcome!"
