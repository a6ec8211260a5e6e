package org.sarchive.es;

import org.elasticsearch.index.mapper.KeywordFieldMapper;
import org.elasticsearch.index.mapper.Mapper;
import org.elasticsearch.index.mapper.TextFieldMapper;
import org.elasticsearch.plugins.MapperPlugin;
import org.elasticsearch.plugins.Plugin;

import java.util.HashMap;
import java.util.Map;

/**
 * Stand-ins for two field types whose real implementations are not on Maven Central:
 * <ul>
 *   <li>{@code match_only_text} (modules/mapper-extras): parsed as {@code text} without norms. Queries (match,
 *   match_phrase, ...) behave like on text; scoring differs (the real type scores constantly), and the index mapping
 *   reads back as {@code "type": "text"}.</li>
 *   <li>{@code wildcard} (x-pack/plugin/wildcard): parsed as {@code keyword}. wildcard/regexp/prefix/term queries
 *   work, on keyword semantics; the mapping reads back as {@code "type": "keyword"}.</li>
 * </ul>
 * Only parameters that both the real type and the stand-in accept should be used (fields, meta, ignore_above,
 * null_value). Disable with SARCHIVE_ES_COMPAT_MAPPERS=0.
 */
public class CompatMappersPlugin extends Plugin implements MapperPlugin {

    @Override
    public Map<String, Mapper.TypeParser> getMappers() {
        Map<String, Mapper.TypeParser> m = new HashMap<>();
        m.put("match_only_text", (name, node, ctx) -> {
            node.putIfAbsent("norms", false);
            return TextFieldMapper.PARSER.parse(name, node, ctx);
        });
        m.put("wildcard", (name, node, ctx) -> KeywordFieldMapper.PARSER.parse(name, node, ctx));
        return m;
    }
}
