"""From a registered model to a checked server: the bento (`bento`), its server process (`server`),
the request bodies it takes (`payloads`) and the smoke test against the registry (`smoke`)."""
