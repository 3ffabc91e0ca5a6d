# syntax=docker/dockerfile:1.10
# The browser UI, served by unprivileged nginx (uid 101, port 8080). The Ingress sends
# /api to the web API, so the page's relative URLs reach it from the same origin.
#   docker build -f docker/frontend.Dockerfile -t ghcr.io/cartridge-ml/cartridge-frontend:0.1.0 .

FROM busybox:1.37.0 AS static
COPY src/cartridge/web/static/ /site/
# Fail the build rather than ship a page whose entry points are missing.
RUN test -s /site/index.html && test -s /site/app.js && test -s /site/style.css

FROM nginxinc/nginx-unprivileged:1.27.3-alpine
LABEL org.opencontainers.image.source="https://github.com/cartridge-ml/cartridge" \
      org.opencontainers.image.description="Cartridge browser UI"
COPY docker/nginx.conf /etc/nginx/conf.d/default.conf
COPY --from=static /site/ /usr/share/nginx/html/
USER 101
EXPOSE 8080
# For `docker run`; in Kubernetes the Deployment's probes call the same path.
HEALTHCHECK --interval=30s --timeout=3s --retries=3 \
    CMD ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/"]
