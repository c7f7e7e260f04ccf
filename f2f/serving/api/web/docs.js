// Starts Swagger UI (the docs extra's files, served beside this script) on this server's own OpenAPI
// document. Nothing is fetched from elsewhere: no validator badge (validatorUrl null), no CDN; the page's
// Content-Security-Policy would refuse it anyway. URLs are relative, so a Serve route prefix is kept.
"use strict";

window.addEventListener("load", () => {
  window.ui = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    validatorUrl: null,
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
    layout: "BaseLayout",
  });
});
