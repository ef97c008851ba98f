-- GET /api/v1/me with Authorization: Bearer.
wrk.method = "GET"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("LK_ACCESS")
