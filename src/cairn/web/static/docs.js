// Starts the vendored Swagger UI on /api/docs (a file, as the CSP forbids inline script). Requests
// made from it carry the page's CSRF token, as every state-changing request from a browser must.
"use strict";
window.addEventListener("DOMContentLoaded", () => {
  const box = document.getElementById("swagger-ui");
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  window.SwaggerUIBundle({
    url: box.dataset.spec,
    dom_id: "#swagger-ui",
    deepLinking: true,
    requestInterceptor: (request) => {
      request.headers["X-CSRF-Token"] = csrf;
      return request;
    },
  });
});
