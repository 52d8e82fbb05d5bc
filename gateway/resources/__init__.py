"""One module per OCI resource. Each handler is `async (request, gateway) -> Response`: it validates
the URL, calls the planes through `gateway.clients`, and maps the result to headers and a body."""
