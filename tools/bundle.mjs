/**
 * Bundles each program's main thread (bin/qmigd, bin/qmigd-qemu) into one file of dist/, after
 * tsc: Node 20's ES module loader pays for every file it opens, resolves and links, and the
 * daemon is over a hundred of them, which was most of its start-up beyond Node's own.
 *
 * Each module keeps what `import.meta.url` meant for it, as a URL relative to the bundle, so
 * paths found from it (data/, schema/, the addon, the worker threads' files, which stay
 * unbundled) do not move. Node's `require` is given to the bundled CommonJS packages.
 */
import { build } from 'esbuild';
import { readFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const outdir = join(root, 'dist', 'src', 'bundles');

const ownImportMeta = {
  name: 'own-import-meta-url',
  setup(b) {
    b.onLoad({ filter: /[\\/]dist[\\/]src[\\/].*\.js$/ }, async (args) => {
      const source = await readFile(args.path, 'utf8');
      const own = `new URL(${JSON.stringify(relative(outdir, args.path).split('\\').join('/'))}, import.meta.url).href`;
      return { contents: source.replaceAll('import.meta.url', own), loader: 'js' };
    });
  },
};

await build({
  entryPoints: { qmigd: join(root, 'dist/src/cli/main.js'), 'qmigd-qemu': join(root, 'dist/src/cli/qemu/main.js') },
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
