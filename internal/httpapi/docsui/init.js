// Starts Swagger UI on the document this server generates. Everything is
// served by the binary itself, so the page works offline.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#docs",
    deepLinking: true,
    persistAuthorization: false,
  });
});
