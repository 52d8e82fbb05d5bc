"""Side-by-side benchmark of Lading against CNCF Distribution (`python -m bench`, `make bench`).

Modules: `registries` starts and stops the two registries under test, `loadgen` drives the
request-rate rows with wrk (GET) and hey (HEAD), `transfer` is the lean byte-moving client for the blob and push rows,
`workload` holds the rows and runs them in alternating A/B rounds, `report` prints the table and
writes the JSON, `__main__` is the command line.
"""
