"""The donkeycar Unity simulator's TCP protocol (docs/donkey-protocol.md), both ways."""
