/**
 * Bundles each program's main thread (bin/qmigd, bin/qmigd-qemu) and each worker thread into
 * files of dist/src/bundles/, after tsc: Node 20's ES module loader pays for every file it opens,
 * resolves and links, and the daemon is over a hundred of them, which was most of its start-up
 * beyond Node's own; a worker thread so loaded also kept a few MiB more.
 *
 * Each module keeps what `import.meta.url` meant for it, as a URL relative to the bundle, so
 * paths found from it (data/, schema/, the addon) do not move; except where a module names a
 * worker thread's file (`new URL('./X-worker.js', import.meta.url)`), which then is the bundled
 * worker beside it. Node's `require` is given to the bundled CommonJS packages. Split, so that
 * -daemonize's waiting parent loads only what it runs.
 */
import { build } from 'esbuild';
import { readFile, rm } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const outdir = join(root, 'dist', 'src', 'bundles');
const WORKERS = ['migration/ram/page-worker', 'migration/ram/load-worker', 'migration/multifd/send-worker', 'migration/multifd/recv-worker'];
const WORKER_URL = /new URL\('\.\/([a-z]+-worker)\.js', import\.meta\.url\)/g;

const ownImportMeta = {
  name: 'own-import-meta-url',
  setup(b) {
    b.onLoad({ filter: /[\\/]dist[\\/]src[\\/].*\.js$/ }, async (args) => {
      const source = await readFile(args.path, 'utf8');
      const own = `new URL(${JSON.stringify(relative(outdir, args.path).split('\\').join('/'))}, import.meta.url).href`;
      const contents = source
        .split(WORKER_URL)
        .map((part, i) => (i % 2 === 1 ? `new URL('./${part}.js', import.meta.url)` : part.replaceAll('import.meta.url', own)))
        .join('');
      return { contents, loader: 'js' };
    });
  },
};

// Chunks are named by content: the last build's would stay beside this one's, for ever.
await rm(outdir, { recursive: true, force: true });
await build({
  entryPoints: {
    qmigd: join(root, 'dist/src/cli/main.js'),
    'qmigd-qemu': join(root, 'dist/src/cli/qemu/main.js'),
    ...Object.fromEntries(WORKERS.map((w) => [w.split('/').pop(), join(root, `dist/src/${w}.js`)])),
  },
  outdir,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  splitting: true,
  plugins: [ownImportMeta],
  banner: { js: "import { createRequire as __qmigdRequire } from 'node:module'; const require = __qmigdRequire(import.meta.url);" },
  logLevel: 'warning',
});
