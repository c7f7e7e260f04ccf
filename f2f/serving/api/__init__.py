"""The HTTP API: the wire types (`wire`), the routes (`routers/`, one router per resource, the page's files in
`web/`), submit and wait (`service`), admission and API keys (`admission`, `auth`), an output in the format and size
asked for (`outputs`), a job's candidate frames and the caller's choice (`candidates`), and the one exception -> HTTP
mapping (`errors`)."""
