// `npm run build`: copies the web console's files (plain ES modules, CSS, HTML: no build step
// of their own) from src/admin/console/ to dist/admin/console/, for installs that ship dist/.
import { cpSync, mkdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const from = join(root, 'src', 'admin', 'console');
const to = join(root, 'dist', 'admin', 'console');
rmSync(to, { recursive: true, force: true });
mkdirSync(to, { recursive: true });
cpSync(from, to, { recursive: true });
