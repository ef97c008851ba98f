-- GET /api/v1/me with the access cookie.
wrk.method = "GET"
wrk.headers["Cookie"] = "access_token=" .. os.getenv("LK_ACCESS")
