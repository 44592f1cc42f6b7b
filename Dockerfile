# qmigd: build with dev dependencies, run with production ones only, as a non-root user.
FROM node:20-bookworm-slim AS build
# npm ci builds the native addon (native/, node-gyp): it needs python3, make and g++, and Node's
# headers, which this image has under /usr/local (so node-gyp downloads nothing).
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
ENV npm_config_nodedir=/usr/local
WORKDIR /src
COPY package.json package-lock.json tsconfig.json ./
COPY native ./native
COPY src ./src
COPY schema ./schema
COPY data ./data
COPY bin ./bin
COPY test ./test
COPY bench ./bench
COPY tools ./tools
RUN npm ci && npm prune --omit=dev

FROM node:20-bookworm-slim
WORKDIR /app
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist/src ./dist/src
COPY --from=build /src/native/build/Release/qmigd_native.node ./native/build/Release/qmigd_native.node
COPY --from=build /src/schema ./schema
COPY --from=build /src/data ./data
COPY --from=build /src/bin ./bin
USER node
EXPOSE 4444
# Asks query-status over QMP: negotiate, query, and expect a "return".
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD node -e "const s=require('net').connect(4444,'127.0.0.1');let b='';s.on('data',d=>{b+=d;if(b.split('\r\n').length===2)s.write('{\"execute\":\"qmp_capabilities\"}{\"execute\":\"query-status\"}');if(/\"status\": \"/.test(b)){s.end();process.exit(0)}});s.on('error',()=>process.exit(1));setTimeout(()=>process.exit(1),2500)"
ENTRYPOINT ["node", "bin/qmigd"]
# tcp::PORT listens on every interface of the container; publish it on the host's loopback only
# (docker run -p 127.0.0.1:4444:4444): QMP has no authentication (see the README's Security section).
CMD ["--qmp", "tcp::4444,server=on,wait=off"]
