"""The protocol paper's example system: Portal -> Auth, Portal -> Proc -> Auth, Proc -> DB.

A transaction asks Auth for a token (through Portal) and has Proc ask Auth to verify it: if
Auth changes version between the two calls, the transaction fails. `logic` is pure (tokens,
trace context, how a transaction is judged); `server` serves one role.
"""
