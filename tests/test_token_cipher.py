"""TokenCipher: AVATAR_TOKEN_KEYS parsing, encryption bound to its row, key ids and rotation checks."""

from __future__ import annotations

import base64
import os

import pytest

from storage.token_cipher import DEV_KEY_ID, TokenCipher, TokenDecryptError, is_encrypted, key_id_of

ROW_A = b"avatar_sessions.heygen_session_token:row-a"
ROW_B = b"avatar_sessions.heygen_session_token:row-b"
SECRET = "eyJhbGciOiJIUzI1NiJ9.session-token-of-heygen.c2lnbmF0dXJl"


def new_key() -> bytes:
    return os.urandom(32)


def keys_value(*entries: tuple[str, bytes]) -> str:
    return ",".join(f"{kid}:{base64.urlsafe_b64encode(key).decode()}" for kid, key in entries)


def test_round_trip_with_a_fresh_nonce_each_time() -> None:
    cipher = TokenCipher.from_env_value(keys_value(("k1", new_key())))
    first, second = cipher.encrypt(SECRET, context=ROW_A), cipher.encrypt(SECRET, context=ROW_A)
    assert first != second  # a fresh nonce each time
    for stored in (first, second):
        assert stored.startswith("enc:v1:k1:") and SECRET not in stored
        assert cipher.decrypt(stored, context=ROW_A) == SECRET
    assert is_encrypted(first) and cipher.is_encrypted(first) and not is_encrypted(SECRET)
    assert key_id_of(first) == "k1" and key_id_of(SECRET) is None
    assert repr(cipher) == "<TokenCipher key ids k1>"
    assert (
        cipher.encrypt("", context=ROW_A) != ""
        and cipher.decrypt(cipher.encrypt("", context=ROW_A), context=ROW_A) == ""
    )


def test_a_token_does_not_decrypt_in_another_row() -> None:
    cipher = TokenCipher([("k1", new_key())])
    stored = cipher.encrypt(SECRET, context=ROW_A)
    with pytest.raises(TokenDecryptError, match="copied from another row"):
        cipher.decrypt(stored, context=ROW_B)


def test_tampering_is_detected() -> None:
    k1, k2 = new_key(), new_key()
    cipher = TokenCipher([("k2", k2), ("k1", k1)])
    stored = cipher.encrypt(SECRET, context=ROW_A)
    prefix, sealed = stored.rsplit(":", 1)
    flipped = sealed[:5] + ("A" if sealed[5] != "A" else "B") + sealed[6:]
    with pytest.raises(TokenDecryptError, match="does not authenticate"):
        cipher.decrypt(f"{prefix}:{flipped}", context=ROW_A)
    with pytest.raises(TokenDecryptError, match="does not authenticate"):
        cipher.decrypt(stored.replace(":k2:", ":k1:"), context=ROW_A)  # relabelled to the other key
    with pytest.raises(TokenDecryptError):
        cipher.decrypt(stored[:-4], context=ROW_A)  # truncated
    with pytest.raises(TokenDecryptError, match="form"):
        cipher.decrypt("enc:v1:k2:only-three", context=ROW_A)
    with pytest.raises(TokenDecryptError, match="form"):
        cipher.decrypt(stored.replace("enc:v1:", "enc:v9:"), context=ROW_A)
    with pytest.raises(TokenDecryptError, match="not base64"):
        cipher.decrypt("enc:v1:k2:!!!!:????", context=ROW_A)


def test_an_unknown_key_id_fails_clearly() -> None:
    old = TokenCipher([("old", new_key())])
    stored = old.encrypt(SECRET, context=ROW_A)
    with pytest.raises(TokenDecryptError, match=r"key id 'old', which AVATAR_TOKEN_KEYS does not list \(listed: new\)"):
        TokenCipher([("new", new_key())]).decrypt(stored, context=ROW_A)


def test_plaintext_is_not_passed_off_as_decrypted() -> None:
    cipher = TokenCipher([("k1", new_key())])
    with pytest.raises(TokenDecryptError, match="not encrypted"):
        cipher.decrypt(SECRET, context=ROW_A)


def test_older_keys_still_decrypt_and_need_rotation() -> None:
    k1, k2 = new_key(), new_key()
    before = TokenCipher.from_env_value(keys_value(("k1", k1)))
    after = TokenCipher.from_env_value(keys_value(("k2", k2), ("k1", k1)))
    stored = before.encrypt(SECRET, context=ROW_A)
    assert after.decrypt(stored, context=ROW_A) == SECRET
    assert after.newest_key_id == "k2" and after.key_ids == ("k2", "k1")
    assert after.needs_rotation(stored) and not before.needs_rotation(stored)
    assert after.needs_rotation(SECRET)  # plaintext
    assert not after.needs_rotation(after.encrypt(SECRET, context=ROW_A))


def test_env_value_accepts_standard_and_url_safe_base64_with_or_without_padding() -> None:
    key = bytes(range(250, 256)) + bytes(26)  # encodes with + and / (standard) or - and _ (URL-safe)
    standard, urlsafe = base64.b64encode(key).decode(), base64.urlsafe_b64encode(key).decode()
    assert "+" in standard or "/" in standard
    for encoded in (standard, urlsafe, urlsafe.rstrip("=")):
        cipher = TokenCipher.from_env_value(f" a-1_B : {encoded} , other:{base64.b64encode(new_key()).decode()} ")
        assert cipher.key_ids == ("a-1_B", "other")
        stored = cipher.encrypt(SECRET, context=ROW_A)
        assert TokenCipher([("a-1_B", key)]).decrypt(stored, context=ROW_A) == SECRET


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "is empty"),
        (" , ", "is empty"),
        ("nokeyid", "entry 1 is not <key id>:<base64 key>"),
        ("k1:", "entry 1 is not"),
        (":QUFB", "entry 1 is not"),
        ("k1:{k},", "entry 2 is not"),
        ("k1:{k},k1:{k}", "entry 2: key id 'k1' is listed twice"),
        ("bad id:{k}", "entry 1: key id must be"),
        ("k:e:y:{k}", "entry 1: key id must be|not valid base64"),
        ("k1:{short}", "entry 1 \\(key id 'k1'\\): key must be 32 bytes, got 16"),
        ("k1:{k},k2:not*base64!", "entry 2 \\(key id 'k2'\\): key is not valid base64"),
        ("x" * 33 + ":{k}", "key id must be 1-32"),
    ],
)
def test_bad_env_values_say_what_is_wrong_without_showing_keys(value: str, message: str) -> None:
    key = base64.b64encode(new_key()).decode()
    short = base64.b64encode(os.urandom(16)).decode()
    value = value.format(k=key, short=short)
    with pytest.raises(ValueError, match=message) as raised:
        TokenCipher.from_env_value(value)
    text = str(raised.value)
    assert key not in text and short not in text and "not*base64" not in text
    assert text.startswith("AVATAR_TOKEN_KEYS")


def test_dev_key_is_deterministic_per_secret() -> None:
    one, again, other = TokenCipher.dev("dev-secret"), TokenCipher.dev("dev-secret"), TokenCipher.dev("other-secret")
    stored = one.encrypt(SECRET, context=ROW_A)
    assert one.newest_key_id == DEV_KEY_ID == "dev" and stored.startswith("enc:v1:dev:")
    assert again.decrypt(stored, context=ROW_A) == SECRET
    with pytest.raises(TokenDecryptError):
        other.decrypt(stored, context=ROW_A)
    with pytest.raises(ValueError):
        TokenCipher.dev("")


def test_context_must_name_the_row() -> None:
    cipher = TokenCipher([("k1", new_key())])
    with pytest.raises(ValueError, match="context"):
        cipher.encrypt(SECRET, context=b"")
    with pytest.raises(ValueError, match="context"):
        cipher.decrypt(cipher.encrypt(SECRET, context=ROW_A), context="row-a")  # type: ignore[arg-type]
